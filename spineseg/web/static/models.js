// Models page: imports an exported version archive through the JSON API (with the session's
// CSRF token) and shows the server's message when it is refused; "Roll back…" opens a
// confirmation naming both versions, whose "Yes" posts the rollback form.
"use strict";
(function () {
  const rollbackOpen = document.getElementById("rollback-open");
  if (rollbackOpen) {
    const rollbackConfirm = document.getElementById("rollback-confirm");
    rollbackOpen.addEventListener("click", () => {
      rollbackConfirm.hidden = false;
      rollbackOpen.hidden = true;
      document.getElementById("rollback-cancel").focus();
    });
    document.getElementById("rollback-cancel").addEventListener("click", () => {
      rollbackConfirm.hidden = true;
      rollbackOpen.hidden = false;
    });
  }
  const form = document.getElementById("import-form");
  const error = document.getElementById("import-error");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const response = await fetch("/api/models/import", {
      method: "POST", headers: { "X-CSRF-Token": csrf, Accept: "application/json" }, body: new FormData(form),
    });
    if (response.status === 201) { window.location.reload(); return; }
    const body = await response.json();
    error.textContent = body.detail || response.statusText;
    error.hidden = false;
  });
})();
