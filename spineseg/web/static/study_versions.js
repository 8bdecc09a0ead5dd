// Result page, "Model version and site": fills the version list, re-runs the study with the
// chosen version (then follows its job) and saves the study's site tag, through the JSON API.
"use strict";
(function () {
  const box = document.getElementById("study-versions");
  const studyId = box.dataset.studyId;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const select = document.getElementById("rerun-version");
  const site = document.getElementById("study-site");
  const error = document.getElementById("study-versions-error");
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" };

  function fail(message) { error.textContent = message; error.hidden = false; }

  async function load() {
    const response = await fetch("/api/studies/" + studyId + "/versions", { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) { fail(data.detail || response.statusText); return; }
    for (const id of data.versions) {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id + (id === data.production ? " (production)" : "") + (id === data.model_id ? " (this result)" : "");
      select.appendChild(option);
    }
    site.value = data.site || "";
  }

  document.getElementById("rerun-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const response = await fetch("/api/studies/" + studyId + "/rerun",
      { method: "POST", headers: headers, body: JSON.stringify({ version: select.value }) });
    const data = await response.json();
    if (response.status === 202) { window.location.href = "/jobs/" + data.job_id; return; }
    fail(data.detail || response.statusText);
  });

  document.getElementById("site-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const response = await fetch("/api/studies/" + studyId + "/site",
      { method: "PUT", headers: headers, body: JSON.stringify({ site: site.value }) });
    const data = await response.json();
    if (!response.ok) fail(data.detail || response.statusText);
    else site.value = data.site;
  });
  load();
})();
