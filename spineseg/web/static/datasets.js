// Dataset page: adds a labelled case (upload with a progress bar, or from a study) through the
// JSON API and shows the server's message next to the field it names; removes cases.
"use strict";
(function () {
  const datasetId = document.getElementById("dataset-summary").dataset.datasetId;
  const base = "/api/datasets/" + datasetId;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function showError(id, message) {
    const el = document.getElementById(id);
    el.textContent = message;
    el.hidden = false;
  }
  function clearErrors(ids) {
    for (const id of ids) { const el = document.getElementById(id); el.hidden = true; el.textContent = ""; }
  }

  const caseForm = document.getElementById("case-form");
  const bar = document.getElementById("case-progress");
  caseForm.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(["case-files-error", "case-truth-error", "case-form-error"]);
    const data = new FormData(caseForm);
    const request = new XMLHttpRequest();
    request.open("POST", base + "/cases");
    request.setRequestHeader("X-CSRF-Token", csrf);
    request.setRequestHeader("Accept", "application/json");
    bar.hidden = false;
    request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; });
    request.addEventListener("load", () => {
      bar.hidden = true;
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (err) { body = { detail: request.statusText }; }
      if (request.status === 201) { window.location.reload(); return; }
      const field = body.field || (String(body.source || "").includes("label") ? "truth" : "");
      const target = field === "files" ? "case-files-error" : field === "truth" ? "case-truth-error" : "case-form-error";
      showError(target, body.detail || ("upload failed (" + request.status + ")"));
    });
    request.addEventListener("error", () => { bar.hidden = true; showError("case-form-error", "network error"); });
    request.send(data);
  });

  const studyForm = document.getElementById("study-case-form");
  studyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!document.getElementById("study-case-error")) return;
    clearErrors(["study-case-error"]);
    const form = new FormData(studyForm);
    const body = { study_id: form.get("study_id"), patient: form.get("patient") };
    if (form.get("site")) body.site = form.get("site");
    const response = await fetch(base + "/cases/from-study", {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body),
    });
    if (response.status === 201) { window.location.reload(); return; }
    const answer = await response.json();
    showError("study-case-error", answer.detail || response.statusText);
  });

  for (const button of document.querySelectorAll(".remove-case")) {
    button.addEventListener("click", async () => {
      if (!window.confirm("Remove case " + button.dataset.name + " from the dataset?")) return;
      const caseId = button.closest("tr").dataset.caseId;
      const response = await fetch(base + "/cases/" + caseId, { method: "DELETE", headers: { "X-CSRF-Token": csrf } });
      if (response.ok) window.location.reload();
      else window.alert((await response.json()).detail);
    });
  }
})();
