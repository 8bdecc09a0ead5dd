// Study list: ask before deleting.
"use strict";
for (const form of document.querySelectorAll(".delete-form")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm("Delete study \"" + form.dataset.name + "\" and all its files? This cannot be undone.")) {
      event.preventDefault();
    }
  });
}
