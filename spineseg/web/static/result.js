// Result page: the paper-style overlay image of a chosen axial slice (the viewer is viewer.js).
// Slices are counted along the patient's inferior-superior axis whatever the file's storage
// order, shown 1-based (1 = most inferior); the API's ?slice= is 0-based.
"use strict";
(function () {
  const root = document.getElementById("result");
  const overlayUrl = root.dataset.overlayUrl;
  const slider = document.getElementById("overlay-slice");
  const label = document.getElementById("overlay-slice-label");
  const image = document.getElementById("overlay");
  const error = document.getElementById("overlay-error");
  let pending = null;

  async function showOverlay(chosen) {
    // Without a slice the server picks one through the middle of the spine and says which.
    const query = chosen === undefined ? "" : "?slice=" + chosen;
    pending = query;
    const response = await fetch(overlayUrl + query);
    if (pending !== query) return;  // a later choice superseded this one
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).detail || message; } catch { /* not JSON */ }
      error.textContent = "this slice could not be drawn: " + message;
      error.hidden = false;
      return;
    }
    error.hidden = true;
    const count = Number(response.headers.get("X-Slice-Count"));
    const index = Number(response.headers.get("X-Slice"));
    if (count) slider.max = String(count);
    slider.value = String(index + 1);
    label.textContent = "slice " + (index + 1) + " of " + count + " (1 = most inferior)";
    root.dataset.overlaySlice = String(index + 1);
    const previous = image.src;
    image.src = URL.createObjectURL(await response.blob());
    if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
  }
  slider.addEventListener("input", () => { label.textContent = "slice " + slider.value + " of " + slider.max; });
  slider.addEventListener("change", () => showOverlay(Number(slider.value) - 1));
  showOverlay();
})();
