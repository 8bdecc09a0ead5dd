// Training run page: polls the run's state every second and its log every few seconds, and
// draws the loss (per step) and validation Dice (per epoch) as small SVG line charts. Cancel
// asks first: the button opens a confirmation whose "Yes" posts the cancel form.
"use strict";
(function () {
  const box = document.getElementById("run");
  const runId = box.dataset.runId;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function element(name, attributes, text) {
    const el = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // points: [[x, y], ...]; yRange / xRange: [low, high], or null to fit the data.
  function drawChart(svg, points, yRange, xLabel, xRange) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const width = 480, height = 220, left = 46, right = 10, top = 10, bottom = 30;
    svg.appendChild(element("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom,
                                      fill: "#fff", stroke: "#c9d1dd" }));
    if (points.length === 0) {
      svg.appendChild(element("text", { x: width / 2, y: height / 2, "text-anchor": "middle", fill: "#667085" },
                              "no data yet"));
      return;
    }
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const x0 = xRange ? xRange[0] : Math.min(...xs);
    const x1 = Math.max(xRange ? xRange[1] : Math.max(...xs), x0 + 1);
    let [y0, y1] = yRange || [Math.min(...ys), Math.max(...ys)];
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => left + (x - x0) / (x1 - x0) * (width - left - right);
    const sy = (y) => top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom);
    for (const value of [y0, (y0 + y1) / 2, y1]) {
      svg.appendChild(element("line", { x1: left, x2: width - right, y1: sy(value), y2: sy(value), stroke: "#e4e8ef" }));
      svg.appendChild(element("text", { x: left - 4, y: sy(value) + 4, "text-anchor": "end", "font-size": 11 },
                              value.toFixed(3)));
    }
    svg.appendChild(element("text", { x: left, y: height - 8, "font-size": 11 }, xLabel + " " + x0));
    svg.appendChild(element("text", { x: width - right, y: height - 8, "font-size": 11, "text-anchor": "end" },
                            xLabel + " " + x1));
    const path = points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ");
    svg.appendChild(element("polyline", { points: path, fill: "none", stroke: "#2f6fde", "stroke-width": 1.5 }));
    for (const p of points.length <= 60 ? points : []) {
      svg.appendChild(element("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: "#2f6fde" }));
    }
    svg.dataset.points = String(points.length);
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    return s >= 3600 ? Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min"
      : s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
  }

  function show(run) {
    $("run-status").textContent = run.status;
    $("run-stage").textContent = run.stage;
    $("run-queue").textContent = run.queue_position ? "· position " + run.queue_position + " in the queue" : "";
    $("run-progress").value = run.progress;
    $("run-percent").textContent = Math.round(run.progress * 100) + " %";
    $("run-epoch").textContent = run.epoch;
    $("run-step").textContent = run.step;
    $("run-eta").textContent = run.status === "running" ? formatSeconds(run.eta_seconds) : "–";
    const last = run.losses.length ? run.losses[run.losses.length - 1][1] : null;
    $("run-loss").textContent = last === null ? "–" : last.toFixed(4);
    const dices = run.history.filter((h) => h.val_dice !== null).map((h) => h.val_dice);
    $("run-dice").textContent = dices.length ? Math.max(...dices).toFixed(4) : "–";
    if (run.error) {
      $("run-error").textContent = run.error;
      $("run-error").className = run.status === "cancelled" ? "notice" : "error";  // cancelled is no failure
      $("run-error").hidden = false;
    }
    if (run.version_id) {
      $("run-version").hidden = false;
      $("run-version-link").firstChild.textContent = run.version_id;
    }
    $("run-cancel").hidden = !(run.status === "queued" || run.status === "running");
    drawChart($("loss-chart"), run.losses, null, "step", [1, Math.max(run.total_steps, 1)]);
    drawChart($("dice-chart"), run.history.filter((h) => h.val_dice !== null).map((h) => [h.epoch, h.val_dice]),
              [0, 1], "epoch", [1, Math.max(run.epochs || 1, 1)]);
  }

  async function pollLog() {
    const response = await fetch("/api/training/" + runId + "/log");
    if (response.ok) {
      const pre = $("run-log");
      pre.textContent = await response.text();
      pre.scrollTop = pre.scrollHeight;
    }
  }

  let ticks = 0;
  async function poll() {
    let run;
    try {
      const response = await fetch("/api/training/" + runId, { headers: { Accept: "application/json" } });
      run = await response.json();
      if (!response.ok) throw new Error(run.detail || response.statusText);
    } catch (err) {
      $("run-error").textContent = "cannot read the run's state: " + err.message;
      $("run-error").hidden = false;
      setTimeout(poll, 3000);
      return;
    }
    show(run);
    const active = run.status === "queued" || run.status === "running";
    if (!active || ticks % 3 === 0) pollLog();
    ticks += 1;
    if (active) setTimeout(poll, 1000);
  }
  $("run-cancel-open").addEventListener("click", () => {
    $("run-cancel-confirm").hidden = false;
    $("run-cancel-open").hidden = true;
    $("run-cancel-no").focus();
  });
  $("run-cancel-no").addEventListener("click", () => {
    $("run-cancel-confirm").hidden = true;
    $("run-cancel-open").hidden = false;
  });
  poll();
})();
