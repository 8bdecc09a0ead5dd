// Models page: imports an exported version archive through the JSON API (with the session's
// CSRF token) and shows the server's message when it is refused.
"use strict";
(function () {
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
