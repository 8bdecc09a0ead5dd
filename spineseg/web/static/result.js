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
  function showOverlay() {
    label.textContent = "slice " + slider.value;
    image.src = base + "/overlay.png?slice=" + slider.value;
  }
  slider.addEventListener("change", showOverlay);
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
