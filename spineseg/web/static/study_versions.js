// Result page, "Name and site": renames the study and saves its site tag through the JSON API
// (the heading follows the new name).
"use strict";
(function () {
  const box = document.getElementById("study-versions");
  const studyId = box.dataset.studyId;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const error = document.getElementById("study-versions-error");
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" };

  function fail(message) { error.textContent = message; error.hidden = false; }

  async function save(path, body) {
    error.hidden = true;
    const response = await fetch("/api/studies/" + studyId + path, { method: "PUT", headers: headers, body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) { fail(data.detail || response.statusText); return null; }
    return data;
  }

  document.getElementById("name-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("study-name");
    const data = await save("/name", { name: input.value });
    if (data) {
      input.value = data.name;
      const heading = document.querySelector("h1");
      if (heading) heading.textContent = data.name;
      document.title = data.name + " · SpineSeg";
    }
  });

  document.getElementById("site-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("study-site");
    const data = await save("/site", { site: input.value });
    if (data) input.value = data.site;
  });
})();
