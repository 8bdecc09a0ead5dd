// Job page: follows the job through server-sent events (falls back to polling every second)
// and updates stage, percent, queue position; opens the result when the job is done.
"use strict";
(function () {
  const box = document.getElementById("job");
  const jobId = box.dataset.jobId;
  const studyId = box.dataset.studyId;
  const els = {
    status: document.getElementById("job-status"), stage: document.getElementById("job-stage"),
    queue: document.getElementById("job-queue"), bar: document.getElementById("job-progress"),
    percent: document.getElementById("job-percent"), error: document.getElementById("job-error"),
    cancel: document.getElementById("cancel-form"), link: document.getElementById("result-link"),
  };
  function show(job) {
    els.status.textContent = job.status;
    els.stage.textContent = job.stage;
    els.queue.textContent = job.queue_position ? "· position " + job.queue_position + " in the queue" : "";
    els.bar.value = job.progress;
    els.percent.textContent = Math.round(job.progress * 100) + " %";
    if (job.error) { els.error.textContent = job.error; els.error.hidden = false; }
    const active = job.status === "queued" || job.status === "running";
    showTime(job, active);
    const ended = job.status === "cancelled" || job.status === "failed";
    document.getElementById("job-next").hidden = !ended;
    document.getElementById("next-failed").hidden = job.status !== "failed";
    document.getElementById("next-cancelled").hidden = job.status !== "cancelled";
    if (els.cancel) els.cancel.hidden = !active;
    if (job.status === "done") {
      els.link.hidden = false;
      // replace, not push: Back from the result goes to the page before the job (the upload),
      // not to this page, which would forward again
      window.location.replace("/studies/" + studyId);
    }
    return active;
  }
  // Elapsed time since the upload, and an estimate of what is left from the pace so far.
  const clock = (s) => s < 60 ? Math.round(s) + " s" : Math.floor(s / 60) + " min " + String(Math.round(s % 60)).padStart(2, "0") + " s";
  function showTime(job, active) {
    const now = job.finished_at ? new Date(job.finished_at) : new Date();
    const elapsed = (now - new Date(job.created_at)) / 1000;
    let text = "elapsed " + clock(Math.max(elapsed, 0));
    if (active && job.status === "running" && job.started_at && job.progress > 0.05 && job.progress < 1) {
      const running = (Date.now() - new Date(job.started_at)) / 1000;
      text += " · about " + clock(running / job.progress * (1 - job.progress)) + " left";
    } else if (job.status === "queued") {
      text += " · waiting for a free worker";
    }
    document.getElementById("job-time").textContent = text;
  }
  async function poll() {
    let job;
    try {
      const response = await fetch("/api/jobs/" + jobId, { headers: { Accept: "application/json" } });
      job = await response.json();
      if (!response.ok) throw new Error(job.detail || response.statusText);
    } catch (err) {
      els.error.textContent = "cannot read the job's status: " + err.message;
      els.error.hidden = false;
      setTimeout(poll, 3000);
      return;
    }
    if (show(job)) setTimeout(poll, 1000);
  }
  if (typeof EventSource === "undefined") {
    poll();
  } else {
    const source = new EventSource("/api/jobs/" + jobId + "/events");
    let finished = false;
    source.onmessage = (event) => {
      if (!show(JSON.parse(event.data))) { finished = true; source.close(); }
    };
    source.onerror = () => {
      source.close();
      if (!finished) poll();
    };
  }
})();
