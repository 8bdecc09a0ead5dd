// The training form: show how the chosen dataset's split will come out (rendered by the server
// for every dataset; only the chosen one is visible).
(function () {
  "use strict";
  const select = document.getElementById("train-dataset");
  if (!select) return;
  function show() {
    document.querySelectorAll(".split-preview").forEach(function (el) {
      el.hidden = el.dataset.dataset !== select.value;
    });
  }
  select.addEventListener("change", show);
  show();
})();
