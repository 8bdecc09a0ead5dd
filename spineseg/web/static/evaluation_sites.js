// Evaluation page, "By site": one row per site tag with the mean (± SD) of the main metrics.
"use strict";
(function () {
  const box = document.getElementById("by-site");
  const body = box.querySelector("tbody");
  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }
  function meanSd(stat, digits) {
    if (!stat || stat.mean === null) return "–";
    return stat.mean.toFixed(digits) + (stat.sd === null ? "" : " ± " + stat.sd.toFixed(digits));
  }
  fetch("/api/evaluation/by-site?ids=" + encodeURIComponent(box.dataset.ids), { headers: { Accept: "application/json" } })
    .then(async (response) => {
      const data = await response.json();
      body.textContent = "";
      if (!response.ok) { body.appendChild(cell(data.detail || response.statusText)); return; }
      for (const [site, entry] of Object.entries(data.sites)) {
        const row = document.createElement("tr");
        row.dataset.site = site;
        const m = entry.metrics;
        for (const text of [site, String(entry.studies), meanSd(m.dice, 3), meanSd(m.iou, 3), meanSd(m.hd95_mm, 1),
                            meanSd(m.abs_volume_diff_ml, 1)]) row.appendChild(cell(text));
        body.appendChild(row);
      }
    });
})();
