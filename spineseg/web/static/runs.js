// Result page, "Runs": make a run the study's current one, compare two runs (Dice between their
// masks, volume difference) and re-run the study -- the version list starts at production and
// nothing is queued before the user confirms; the confirmation says whether the new run will
// become the study's result (production only: make_current) or leave it as it is.
"use strict";
(function () {
  const box = document.getElementById("runs");
  const studyId = box.dataset.studyId;
  const api = "/api/studies/" + studyId;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const error = document.getElementById("runs-error");
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" };

  function fail(message) { error.textContent = message; error.hidden = false; }
  async function call(method, path, body) {
    error.hidden = true;
    const response = await fetch(api + path, { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) { fail(data.detail || response.statusText); return null; }
    return data;
  }

  async function pin(runId) {
    if (await call("PUT", "/current-run", { run_id: runId })) window.location.reload();
  }
  for (const button of box.querySelectorAll(".make-current")) button.addEventListener("click", () => pin(button.dataset.runId));

  const compareForm = document.getElementById("compare-form");
  if (compareForm) {
    compareForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const first = document.getElementById("compare-first").value;
      const second = document.getElementById("compare-second").value;
      if (first === second) { fail("choose two different runs"); return; }
      error.hidden = true;
      const response = await fetch(api + "/runs/compare?first=" + first + "&second=" + second, { headers: { Accept: "application/json" } });
      const data = await response.json();
      if (!response.ok) { fail(data.detail || response.statusText); return; }
      document.getElementById("compare-dice").textContent = data.dice.toFixed(4);
      document.getElementById("compare-volumes").textContent = data.first.spine_volume_ml.toFixed(1) + " mL (" +
        data.first.model_version + ") → " + data.second.spine_volume_ml.toFixed(1) + " mL (" + data.second.model_version + ")";
      const diff = data.volume_difference_ml;
      document.getElementById("compare-difference").textContent = (diff > 0 ? "+" : "") + diff.toFixed(1) + " mL";
      document.getElementById("compare-voxels").textContent = data.differing_voxels.toLocaleString("en");
      document.getElementById("compare-result").hidden = false;
    });
  }

  const rerunForm = document.getElementById("rerun-form");
  if (!rerunForm) return;
  const select = document.getElementById("rerun-version");
  const confirmBox = document.getElementById("rerun-confirm");
  let production = null;

  async function loadVersions() {
    const response = await fetch(api + "/versions", { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) { fail(data.detail || response.statusText); return; }
    production = data.production;
    for (const id of data.versions) {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id + (id === data.production ? " (production)" : " (not production)") +
        (id === data.model_id ? " (current result)" : "");
      option.selected = id === data.production;
      select.appendChild(option);
    }
  }

  const currentRun = box.dataset.currentRun;
  const currentText = currentRun ? "run " + currentRun.slice(0, 8) + " (" + box.dataset.currentVersion + ")" : "";
  let makeCurrent = false;
  rerunForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const version = select.value;
    makeCurrent = version === production;
    let outcome;
    if (makeCurrent) {
      outcome = currentText ? "When it is done, it becomes the study's shown result in place of " + currentText + "."
        : "When it is done, it becomes the study's shown result.";
    } else {
      outcome = (currentText ? "The study's shown result stays " + currentText + "; " : "It does not become the study's result by itself; ") +
        "you can view the new run and choose it as the result when it is done.";
    }
    document.getElementById("rerun-confirm-text").textContent = "Segment this study again with " + version +
      (makeCurrent ? " (production)" : " — not the production version") +
      "? A new run is added; every existing run and its files stay as they are. " + outcome;
    confirmBox.hidden = false;
    document.getElementById("rerun-confirm-button").focus();
  });
  document.getElementById("rerun-cancel").addEventListener("click", () => { confirmBox.hidden = true; });
  document.getElementById("rerun-confirm-button").addEventListener("click", async () => {
    confirmBox.hidden = true;
    const data = await call("POST", "/rerun", { version: select.value, make_current: makeCurrent });
    if (data) window.location.href = "/jobs/" + data.job_id;
  });
  loadVersions();
})();
