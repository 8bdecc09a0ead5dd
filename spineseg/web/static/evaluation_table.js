// Evaluation page: select all/none of the studies; sort the table by a column (click its header
// again to reverse); the mean and SD rows stay at the foot.
"use strict";
(function () {
  for (const [id, checked] of [["select-all", true], ["select-none", false]]) {
    const button = document.getElementById(id);
    if (!button) continue;
    button.addEventListener("click", () => {
      for (const box of document.querySelectorAll(button.dataset.target)) box.checked = checked;
    });
  }
  const table = document.getElementById("evaluation");
  if (!table) return;
  const headers = [...table.querySelectorAll("thead th")];
  headers.forEach((th, column) => {
    const button = th.querySelector("button[data-sort]");
    if (!button) return;
    button.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      for (const other of headers) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const body = table.tBodies[0];
      const key = (row) => {
        const cell = row.cells[column];
        if (button.dataset.sort === "number") {
          const value = cell.dataset.value;
          return value === "" || value === undefined ? NaN : Number(value);
        }
        return cell.textContent.trim().toLowerCase();
      };
      const rows = [...body.rows].sort((a, b) => {
        const x = key(a), y = key(b);
        if (typeof x === "number") {  // missing values last either way
          if (Number.isNaN(x)) return 1;
          if (Number.isNaN(y)) return -1;
          return ascending ? x - y : y - x;
        }
        return ascending ? x.localeCompare(y) : y.localeCompare(x);
      });
      for (const row of rows) body.appendChild(row);
    });
  });
})();
