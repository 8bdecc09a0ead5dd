// Resumable uploads through /api/uploads: announce the files, send each in chunks at the
// server's offset (a few files at a time), retry a failed chunk with backoff after asking the
// server where it stands, then complete. The upload id and the files' names, sizes and
// lastModified are kept in localStorage, so after a reload the same files continue from the
// server's offsets. Exposes window.SpineSegResumable for upload.js.
"use strict";
(function () {
  const STORE_KEY = "spineseg.resumableUpload";
  const PARALLEL_FILES = 3;
  const MAX_ATTEMPTS = 10;          // per chunk, with backoff 1, 2, 4 ... 30 s
  const CHUNK_TIMEOUT_MS = 120000;  // a chunk that makes no progress for this long is retried
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  class UploadFailed extends Error {
    constructor(message, field, discarded) { super(message); this.field = field || null; this.discarded = !!discarded; }
  }

  function parse(text) { try { return JSON.parse(text); } catch (err) { return {}; } }
  function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

  async function api(method, url, body) {
    const headers = { "Accept": "application/json", "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    try {
      const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: response.status, body: parse(await response.text()) };
    } catch (err) {
      return { status: 0, body: { detail: "the server cannot be reached" } };
    }
  }

  function fingerprint(items) {
    return items.map((it) => [it.role, it.name, it.file.size, it.file.lastModified]);
  }
  function loadSaved() {
    try { return JSON.parse(localStorage.getItem(STORE_KEY) || "null"); } catch (err) { return null; }
  }
  function save(record) {
    try { localStorage.setItem(STORE_KEY, JSON.stringify(record)); } catch (err) { /* storage full: no resume */ }
  }
  function forget() { localStorage.removeItem(STORE_KEY); }
  function matches(saved, items) {
    return !!saved && JSON.stringify(saved.files) === JSON.stringify(fingerprint(items));
  }

  // One upload run: items = [{file, name, role}] in the server's index order.
  class Upload {
    constructor(items, options) {
      this.items = items;
      this.chunkBytes = options.chunkBytes || 0;
      this.study = options.study || {};  // {name, site} the study gets (checked when announced)
      this.onProgress = options.onProgress || (() => {});
      this.confirmed = items.map(() => 0);
      this.inFlight = items.map(() => 0);
      this.requests = new Set();
      this.cancelled = false;
      this.state = null;
    }

    get total() { return this.items.reduce((sum, it) => sum + it.file.size, 0); }
    report(note) {
      const done = this.confirmed.reduce((a, b) => a + b, 0) + this.inFlight.reduce((a, b) => a + b, 0);
      this.onProgress(Math.min(done, this.total), this.total, note || "");
    }

    async open() {
      const saved = loadSaved();
      if (matches(saved, this.items)) {
        const r = await api("GET", "/api/uploads/" + saved.upload_id);
        if (r.status === 200 && (r.body.status === "uploading" || r.body.status === "done")) {
          this.state = r.body;
          this.resumed = true;
          return;
        }
      }
      if (saved) {  // another upload was pending: only one is remembered, so drop it
        forget();
        api("DELETE", "/api/uploads/" + saved.upload_id);
      }
      const ct = this.items.filter((it) => it.role === "ct");
      const truth = this.items.find((it) => it.role === "truth");
      const r = await api("POST", "/api/uploads", {
        purpose: "study",
        files: ct.map((it) => ({ name: it.name, size: it.file.size })),
        truth: truth ? { name: truth.name, size: truth.file.size } : null,
        name: this.study.name || "",
        site: this.study.site || "",
      });
      if (r.status !== 201) throw new UploadFailed(r.body.detail || ("the upload was refused (" + r.status + ")"), r.body.field);
      this.state = r.body;
      this.resumed = false;
      save({ upload_id: r.body.upload_id, files: fingerprint(this.items), started: Date.now() });
    }

    async resync() {
      const r = await api("GET", "/api/uploads/" + this.state.upload_id);
      if (r.status === 200) this.state = r.body;
      else if (r.status === 404) { forget(); throw new UploadFailed("the server no longer has this upload: start again", null, true); }
      return r.status === 200;
    }

    putChunk(index, offset, blob) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        this.requests.add(xhr);
        const done = (result) => { this.requests.delete(xhr); this.inFlight[index] = 0; resolve(result); };
        xhr.open("PUT", "/api/uploads/" + this.state.upload_id + "/files/" + index + "?offset=" + offset);
        xhr.setRequestHeader("X-CSRF-Token", csrf);
        xhr.setRequestHeader("Accept", "application/json");
        xhr.setRequestHeader("Content-Type", "application/octet-stream");
        xhr.timeout = CHUNK_TIMEOUT_MS;
        xhr.upload.addEventListener("progress", (e) => { this.inFlight[index] = e.loaded; this.report(); });
        xhr.addEventListener("load", () => {
          if (xhr.status === 401 && window.SpineSegSession) window.SpineSegSession.expired();  // resumes after login
          done({ status: xhr.status, body: parse(xhr.responseText) });
        });
        for (const name of ["error", "timeout", "abort"]) xhr.addEventListener(name, () => done({ status: 0, body: {} }));
        xhr.send(blob);
      });
    }

    async sendFile(index) {
      const file = this.items[index].file;
      const chunk = Math.max(1, Math.min(this.chunkBytes || Infinity, this.state.chunk_bytes));
      let offset = this.confirmed[index];
      let attempt = 0;
      while (offset < file.size) {
        if (this.cancelled) throw new UploadFailed("the upload was cancelled", null, true);
        const r = await this.putChunk(index, offset, file.slice(offset, Math.min(file.size, offset + chunk)));
        const known = typeof r.body.received === "number";
        if (known) this.confirmed[index] = offset = r.body.received;
        if (r.status === 200) { attempt = 0; this.report(); continue; }
        const busy = r.status === 409 && known && /being written/.test(r.body.detail || "");
        if (r.status === 409 && known && !busy) continue;  // the server had another offset: carry on from it
        const transient = busy || r.status === 0 || r.status === 408 || r.status === 429 || r.status >= 500;
        if (!transient) throw new UploadFailed(r.body.detail || ("the server refused a chunk (" + r.status + ")"), r.body.field);
        if (this.cancelled) continue;
        attempt += 1;
        if (attempt >= MAX_ATTEMPTS) throw new UploadFailed("the connection keeps failing: choose the same files again later to continue");
        const waitS = Math.min(30, 2 ** (attempt - 1));
        this.report("connection trouble: retrying in " + waitS + " s (try " + (attempt + 1) + " of " + MAX_ATTEMPTS + ")");
        await sleep(waitS * 1000);
        if (await this.resync()) this.confirmed[index] = offset = this.state.files[index].received;
      }
    }

    async sendAll() {
      this.state.files.forEach((f, i) => { this.confirmed[i] = f.received; });
      this.report(this.resumed ? "continuing the interrupted upload" : "");
      const pending = this.state.files.filter((f) => f.received < f.size).map((f) => f.index);
      const worker = async () => {
        try {
          while (pending.length && !this.cancelled) await this.sendFile(pending.shift());
        } catch (err) {
          this.cancelled = true;  // the first failure stops the other files too
          throw err;
        }
      };
      await Promise.all(Array.from({ length: Math.min(PARALLEL_FILES, pending.length) }, worker));
      if (this.cancelled) throw new UploadFailed("the upload was cancelled", null, true);
    }

    // Resolves to {study_id, job_id}; rejects with UploadFailed.
    async run() {
      await this.open();
      if (this.state.status === "done") { forget(); return { study_id: this.state.study_id, job_id: this.state.job_id }; }
      for (let round = 0; round < 3; round += 1) {
        await this.sendAll();
        this.report("checking the files on the server…");
        for (let attempt = 1; ; attempt += 1) {
          const r = await api("POST", "/api/uploads/" + this.state.upload_id + "/complete");
          if (r.status === 202) { forget(); return r.body; }
          if (r.status === 422 || r.status === 404) { forget(); throw new UploadFailed(r.body.detail || "the upload was refused", r.body.field, true); }
          if (r.status === 409 && /bytes/.test(r.body.detail || "")) { await this.resync(); break; }  // a file is short
          if (r.status !== 0 && r.status < 500) throw new UploadFailed(r.body.detail || ("completing failed (" + r.status + ")"), r.body.field);
          if (attempt >= MAX_ATTEMPTS) throw new UploadFailed("the server does not answer: choose the same files again later to continue");
          await sleep(Math.min(30, 2 ** (attempt - 1)) * 1000);
        }
      }
      throw new UploadFailed("the server keeps missing part of the files: start the upload again");
    }

    async cancel() {
      this.cancelled = true;
      for (const xhr of this.requests) xhr.abort();
      forget();
      if (this.state) await api("DELETE", "/api/uploads/" + this.state.upload_id);
    }
  }

  // What the page can offer after a reload: the saved upload as the server sees it, or null.
  async function interrupted() {
    const saved = loadSaved();
    if (!saved) return null;
    const r = await api("GET", "/api/uploads/" + saved.upload_id);
    if (r.status === 200 && r.body.status === "uploading") return { saved, state: r.body };
    if (r.status === 200 || r.status === 404) forget();
    return null;
  }

  async function discard(uploadId) {
    forget();
    await api("DELETE", "/api/uploads/" + uploadId);
  }

  window.SpineSegResumable = { Upload, UploadFailed, interrupted, discard, matches: (items) => matches(loadSaved(), items) };
})();
