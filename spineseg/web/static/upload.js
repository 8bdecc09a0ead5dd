// Upload page: drag and drop (files or whole folders), an upload progress bar, and errors
// shown next to the field the server names. Sends the session's CSRF token as a header.
"use strict";
(function () {
  const form = document.getElementById("upload-form");
  const filesInput = document.getElementById("files");
  const folderInput = document.getElementById("folder");
  const truthInput = document.getElementById("truth");
  const dropZone = document.getElementById("drop-zone");
  const chosen = document.getElementById("chosen");
  const bar = document.getElementById("upload-progress");
  const button = document.getElementById("upload-button");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let picked = [];  // [{file, name}]

  function showPicked() {
    chosen.textContent = picked.length === 0 ? "nothing chosen"
      : picked.length === 1 ? picked[0].name : picked.length + " files (" + picked[0].name + ", …)";
  }
  function clearErrors() {
    for (const id of ["files-error", "truth-error", "form-error"]) {
      const el = document.getElementById(id);
      el.hidden = true;
      el.textContent = "";
    }
  }
  function showError(field, message) {
    const el = document.getElementById(field === "files" || field === "truth" ? field + "-error" : "form-error");
    el.textContent = message;
    el.hidden = false;
  }
  function fromList(list) {
    return Array.from(list).map((f) => ({ file: f, name: f.webkitRelativePath || f.name }));
  }
  filesInput.addEventListener("change", () => { picked = fromList(filesInput.files); showPicked(); clearErrors(); });
  folderInput.addEventListener("change", () => { picked = fromList(folderInput.files); showPicked(); clearErrors(); });

  function readEntry(entry, prefix) {
    return new Promise((resolve, reject) => {
      if (entry.isFile) {
        entry.file((f) => resolve([{ file: f, name: prefix + f.name }]), reject);
        return;
      }
      const reader = entry.createReader();
      const all = [];
      const next = () => reader.readEntries(async (batch) => {
        if (batch.length === 0) {
          const nested = await Promise.all(all.map((e) => readEntry(e, prefix + entry.name + "/")));
          resolve(nested.flat());
          return;
        }
        all.push(...batch);
        next();
      }, reject);
      next();
    });
  }
  dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("over"); });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
  dropZone.addEventListener("drop", async (event) => {
    event.preventDefault();
    dropZone.classList.remove("over");
    const entries = Array.from(event.dataTransfer.items || []).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry())
      .filter(Boolean);
    picked = entries.length ? (await Promise.all(entries.map((e) => readEntry(e, "")))).flat()
      : fromList(event.dataTransfer.files);
    showPicked();
    clearErrors();
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors();
    if (picked.length === 0) {
      showError("files", "choose a DICOM folder, a .zip, a NIfTI file or an image first");
      return;
    }
    const data = new FormData();
    for (const p of picked) data.append("files", p.file, p.name);
    if (truthInput.files.length) data.append("truth", truthInput.files[0], truthInput.files[0].name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/studies");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; });
    xhr.addEventListener("load", () => {
      button.disabled = false;
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = { detail: xhr.statusText }; }
      if (xhr.status === 202) {
        window.location.href = "/jobs/" + body.job_id;
        return;
      }
      bar.hidden = true;
      showError(body.field, body.detail || ("upload failed (" + xhr.status + ")"));
    });
    xhr.addEventListener("error", () => {
      button.disabled = false;
      bar.hidden = true;
      showError(null, "the upload was interrupted (connection lost, or the server refused it)");
    });
    xhr.send(data);
  });
})();
