// Upload page: drag and drop (files or whole folders), errors shown next to the field the
// server names, and every upload but a single picture (sent in one request with the pixel size
// it is asked for) sent through the resumable API (resumable.js): a progress
// bar with bytes and percent, a cancel button, and after a reload an offer to continue.
"use strict";
(function () {
  const form = document.getElementById("upload-form");
  const filesInput = document.getElementById("files");
  const folderInput = document.getElementById("folder");
  const truthInput = document.getElementById("truth");
  const dropZone = document.getElementById("drop-zone");
  // Keyboard users open a chooser with Enter or Space, from the drop zone or from a focused
  // "Choose ..." button. Browsers differ on what Enter does on a file input (Chromium opens it
  // on keypress, not always; Firefox does not), so the page opens it itself, once.
  const openOnKey = (element, input) => element.addEventListener("keydown", (event) => {
    if (event.target === element && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      input.click();
    }
  });
  openOnKey(dropZone, filesInput);
  openOnKey(filesInput, filesInput);
  openOnKey(folderInput, folderInput);
  const chosen = document.getElementById("chosen");
  const bar = document.getElementById("upload-progress");
  const button = document.getElementById("upload-button");
  const cancel = document.getElementById("upload-cancel");
  const status = document.getElementById("upload-status");
  const resumeNotice = document.getElementById("resume-notice");
  const resumeText = document.getElementById("resume-text");
  const resumeDiscard = document.getElementById("resume-discard");
  const Resumable = window.SpineSegResumable;
  let picked = [];  // [{file, name}]
  let running = null;  // the Resumable.Upload in progress

  // A single picture carries no pixel size: the page asks for it before anything is sent (issue 28.8).
  const pixelField = document.getElementById("pixel-field");
  const pixelInput = document.getElementById("pixel-mm");
  const isPicture = () => picked.length === 1 && /\.(png|jpe?g|tiff?|npy|npz)$/i.test(picked[0].name);
  function showPixelField() {
    pixelField.hidden = !isPicture();
    pixelInput.required = isPicture();
  }
  function showPicked() {
    showPixelField();
    chosen.textContent = picked.length === 0 ? "nothing chosen"
      : picked.length === 1 ? picked[0].name : picked.length + " files (" + picked[0].name + ", …)";
    if (picked.length && !resumeNotice.hidden && Resumable.matches(chosenItems())) {
      chosen.textContent += " · continues the interrupted upload";
    }
  }
  function clearErrors() {
    for (const id of ["files-error", "truth-error", "name-error", "site-error", "pixel_mm-error", "form-error"]) {
      const el = document.getElementById(id);
      el.hidden = true;
      el.textContent = "";
    }
  }
  function showError(field, message) {
    const el = document.getElementById(["files", "truth", "name", "site", "pixel_mm"].includes(field) ? field + "-error" : "form-error");
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

  function chosenItems() {
    const ct = picked.slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((p) => ({ file: p.file, name: p.name, role: "ct" }));
    const truth = truthInput.files.length ? [{ file: truthInput.files[0], name: truthInput.files[0].name, role: "truth" }] : [];
    return ct.concat(truth);
  }
  function sizeText(bytes) {
    return bytes >= 2 ** 20 ? (bytes / 2 ** 20).toFixed(1) + " MB" : (bytes / 1024).toFixed(1) + " kB";
  }
  function showProgress(done, total, note) {
    bar.hidden = false;
    bar.value = total ? done / total : 1;
    status.hidden = false;
    const percent = total ? Math.floor((done / total) * 100) : 100;
    status.textContent = sizeText(done) + " of " + sizeText(total) + " (" + percent + " %)" + (note ? " · " + note : "");
  }
  function idle() {
    button.disabled = false;
    cancel.hidden = true;
    running = null;
  }

  async function offerResume() {
    const found = await Resumable.interrupted();
    if (!found) return;
    const files = found.state.files.filter((f) => f.role === "ct");
    const name = files.length === 1 ? files[0].name : files.length + " files (" + files[0].name + ", …)";
    resumeText.textContent = "An upload of " + name + " was interrupted with " + sizeText(found.state.received_bytes)
      + " of " + sizeText(found.state.total_bytes) + " received. Choose the same files again and press "
      + "“Upload and segment” to continue where it stopped.";
    resumeNotice.hidden = false;
    resumeNotice.dataset.uploadId = found.state.upload_id;
  }
  resumeDiscard.addEventListener("click", async () => {
    await Resumable.discard(resumeNotice.dataset.uploadId);
    resumeNotice.hidden = true;
  });
  cancel.addEventListener("click", async () => {
    if (running) await running.cancel();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    if (picked.length === 0) {
      showError("files", "choose a DICOM folder, a .zip, a NIfTI file or an image first");
      return;
    }
    if (isPicture()) { await sendPicture(); return; }
    const upload = new Resumable.Upload(chosenItems(), {
      chunkBytes: Number(form.dataset.chunkBytes) || 0,
      onProgress: showProgress,
      // the name the uploader chose (never the file's name) and the site, given with the files
      study: { name: document.getElementById("study-name").value.trim(), site: document.getElementById("study-site").value.trim() },
    });
    running = upload;
    button.disabled = true;
    cancel.hidden = false;
    showProgress(0, upload.total, "starting");
    try {
      const result = await upload.run();
      resumeNotice.hidden = true;
      status.textContent = "uploaded: the job is queued";
      window.location.href = "/jobs/" + result.job_id;
    } catch (err) {
      idle();
      bar.hidden = true;
      status.hidden = true;
      if (err.discarded) resumeNotice.hidden = true;
      showError(err.field, err.message || String(err));
    }
  });
  // One picture is small: sent in one request with its pixel size (the resumable API takes none).
  async function sendPicture() {
    const body = new FormData();
    body.append("files", picked[0].file, picked[0].name);
    if (truthInput.files.length) body.append("truth", truthInput.files[0], truthInput.files[0].name);
    body.append("name", document.getElementById("study-name").value.trim());
    body.append("site", document.getElementById("study-site").value.trim());
    body.append("pixel_mm", pixelInput.value.trim());
    button.disabled = true;
    showProgress(0, picked[0].file.size, "sending");
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const response = await fetch("/api/studies", { method: "POST", body, headers: { "Accept": "application/json", "X-CSRF-Token": csrf } });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      status.textContent = "uploaded: the job is queued";
      window.location.href = "/jobs/" + answer.job_id;
      return;
    }
    idle();
    bar.hidden = true;
    status.hidden = true;
    showError(answer.field, answer.detail || response.status + " " + response.statusText);
  }
  offerResume();
})();
