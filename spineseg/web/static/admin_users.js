// Admin page, users: "Delete…" opens the row's confirmation (what happens to the user's
// studies, tokens and uploads); only its "Yes" posts the delete form, "Cancel" closes it.
"use strict";
(function () {
  for (const open of document.querySelectorAll(".delete-user-open")) {
    const form = document.getElementById(open.getAttribute("aria-controls"));
    open.addEventListener("click", () => {
      form.hidden = false;
      open.hidden = true;
      form.querySelector(".delete-user-cancel").focus();
    });
    form.querySelector(".delete-user-cancel").addEventListener("click", () => {
      form.hidden = true;
      open.hidden = false;
      open.focus();
    });
  }
})();
