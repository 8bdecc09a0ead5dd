// "Send to PACS" on the result page: only for studies imported over DICOMweb. Sends the
// current run's DICOM SEG back (POST /api/studies/<id>/pacs/send) and says what happened.
(function () {
  "use strict";
  const box = document.getElementById("pacs-send");
  if (!box) return;
  const studyId = box.dataset.studyId;
  const state = document.getElementById("pacs-send-state");
  const button = document.getElementById("pacs-send-button");
  const result = document.getElementById("pacs-send-result");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function describe(info) {
    if (info.send_error) return "Last send failed: " + info.send_error;
    if (info.sent_run_id) return "The result of run " + info.sent_run_id.slice(0, 8) + " is in PACS " + info.endpoint + ".";
    return "Imported from PACS " + info.endpoint + "; its result has not been sent back yet.";
  }

  fetch("/api/studies/" + studyId + "/pacs", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : { linked: false }))
    .then((info) => {
      if (!info.linked) return;
      box.hidden = false;
      state.textContent = describe(info);
      if (info.origin !== "dicomweb") {
        button.hidden = true;
        state.textContent += " It came from the DICOM network: the listener sends its SEG back by C-STORE.";
      }
    });

  button.addEventListener("click", () => {
    button.disabled = true;
    result.className = "";
    result.textContent = "sending…";
    fetch("/api/studies/" + studyId + "/pacs/send", {
      method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
    })
      .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
      .then(({ ok, body }) => {
        if (ok) {
          state.textContent = describe({ sent_run_id: body.run_id, endpoint: body.endpoint });
          result.textContent = "Sent " + (body.outputs || body.modalities).join(" + ") + " of run " + body.run_id.slice(0, 8) +
            " to " + body.endpoint + " (" + body.stored + " stored).";
        } else {
          result.className = "error";
          result.textContent = "Not sent: " + (body.detail || "error");
        }
      })
      .catch((e) => { result.className = "error"; result.textContent = "Not sent: " + e; })
      .finally(() => { button.disabled = false; });
  });
})();
