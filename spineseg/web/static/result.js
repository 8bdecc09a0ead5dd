// Result page: the NiiVue viewer (CT + spine mask [+ truth], four views, window presets,
// overlay opacity) and the overlay image of a chosen axial slice.
"use strict";
(function () {
  const root = document.getElementById("result");
  const studyId = root.dataset.studyId;
  const hasTruth = root.dataset.hasTruth === "true";
  const status = document.getElementById("viewer-status");
  const WINDOWS = { bone: [-450, 1050], soft: [-160, 240] };
  const base = "/api/studies/" + studyId;

  const slider = document.getElementById("overlay-slice");
  const label = document.getElementById("overlay-slice-label");
  const image = document.getElementById("overlay");
  async function showOverlay(chosen) {
    // Without a slice the server picks one through the middle of the spine and says which.
    const query = chosen === undefined ? "" : "?slice=" + chosen;
    const response = await fetch(base + "/overlay.png" + query);
    if (!response.ok) return;
    const count = Number(response.headers.get("X-Slice-Count"));
    const index = Number(response.headers.get("X-Slice"));
    if (count) slider.max = String(count - 1);
    slider.value = String(index);
    label.textContent = "slice " + index + " of " + count + " (inferior to superior)";
    const previous = image.src;
    image.src = URL.createObjectURL(await response.blob());
    if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
  }
  slider.addEventListener("change", () => showOverlay(slider.value));
  showOverlay();

  if (typeof niivue === "undefined") {
    status.textContent = "the viewer script did not load";
    return;
  }
  const nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false });
  const views = {
    multi: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial, sagittal: nv.sliceTypeSagittal,
    coronal: nv.sliceTypeCoronal, render: nv.sliceTypeRender,
  };
  async function start() {
    await nv.attachTo("viewer");
    const volumes = [
      { url: base + "/ct.nii.gz", name: "ct.nii.gz", colormap: "gray", cal_min: WINDOWS.bone[0], cal_max: WINDOWS.bone[1] },
      { url: base + "/mask.nii.gz", name: "mask.nii.gz", colormap: "red", opacity: 0.5, cal_min: 0, cal_max: 1 },
    ];
    if (hasTruth) {
      volumes.push({ url: base + "/truth.nii.gz", name: "truth.nii.gz", colormap: "blue", opacity: 0.35,
                     cal_min: 0, cal_max: 1 });
    }
    await nv.loadVolumes(volumes);
    nv.setRadiologicalConvention(true);  // patient's right on the screen's left, as in the overlay image
    nv.setSliceType(nv.sliceTypeMultiplanar);
    status.textContent = "scroll to move through slices; drag to move the crosshair; right-drag (3D) to rotate";
    root.dataset.viewerReady = "true";
  }
  for (const button of document.querySelectorAll("[data-view]")) {
    button.addEventListener("click", () => nv.setSliceType(views[button.dataset.view]));
  }
  for (const button of document.querySelectorAll("[data-window]")) {
    button.addEventListener("click", () => {
      const [low, high] = WINDOWS[button.dataset.window];
      nv.volumes[0].cal_min = low;
      nv.volumes[0].cal_max = high;
      nv.updateGLVolume();
    });
  }
  document.getElementById("opacity").addEventListener("input", (event) => {
    for (let i = 1; i < nv.volumes.length; i++) nv.setOpacity(i, Number(event.target.value));
  });
  start().catch((err) => { status.textContent = "the viewer failed: " + err; });
})();
