"""Issue 29 item 3 on the result page: the uncertainty map as a viewer layer in Debian's headless
Chromium, on ts-abdomen-small segmented by the shipped model: the map loads as a second volume
over the CT, starts hidden, shows and hides with its tick and fades with its opacity (pixel
counts in the map's viridis colours on screenshots), and the legend says what the colours mean.
With SPINESEG_SCREENSHOT_DIR set, the page with the layer shown is saved there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CASES
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_viewer_tools import canvas_rgb, open_result
from tests.web.web_helpers import add_user, make_settings, upload_and_wait

CASE = CASES / "ts-abdomen-small"
SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.skipif(not CASE.is_dir(), reason=f"shared case not found at {CASE} (set SPINESEG_SHARED_DATA)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    data_dir = tmp_path_factory.mktemp("uncertainty-layer")
    token = add_user(make_settings(data_dir), "carla", "clinician")
    live = LiveServer(data_dir)
    live.start()
    yield live, token
    live.stop()


def changed(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels whose colour differs by more than 40 in a channel between two screenshots."""
    return int((np.abs(a - b).max(axis=-1) > 40).sum())


def test_uncertainty_layer_loads_toggles_and_has_a_legend(server, browser, tmp_path: Path) -> None:
    live, token = server
    study = upload_and_wait(live.url, token, CASE / "ct.nii.gz", None, timeout_s=300)
    page = open_result(browser, live, study, 1600, 1000)
    assert page.evaluate("() => window.spineViewer.nv.volumes.length") == 2  # the CT and the map
    assert page.evaluate("() => window.spineViewer.nv.volumes[1].opacity") == 0  # hidden at first
    legend = page.locator("#legend [data-legend=uncertainty]")
    assert legend.inner_text().strip() == "Uncertainty: 1 % purple → 100 % yellow"
    meaning = legend.get_attribute("title")  # in full on hover, also on the layer's row
    assert "probability margin" in meaning and "no colour where it was sure" in meaning
    assert page.get_attribute("#layers [data-layer=uncertainty]", "title") == meaning
    row = "#layers [data-layer=uncertainty]"
    hidden = canvas_rgb(page)
    page.set_checked(f"{row} [data-show]", True)
    page.locator(f"{row} [data-opacity]").fill("1")
    page.wait_for_function("() => document.getElementById('result').dataset.uncertainty === '[true,1]'")
    shown = canvas_rgb(page)
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "result-uncertainty-layer.png"))
    page.locator(f"{row} [data-opacity]").fill("0.3")
    page.wait_for_function("() => document.getElementById('result').dataset.uncertainty === '[true,0.3]'")
    faint = canvas_rgb(page)
    page.set_checked(f"{row} [data-show]", False)
    page.wait_for_function("() => JSON.parse(document.getElementById('result').dataset.uncertainty)[0] === false")
    off = canvas_rgb(page)
    counts = {"shown": changed(shown, hidden), "opacity 0.3": changed(faint, hidden),
              "hidden again": changed(off, hidden)}
    print(f"\npixels changed against the layer hidden: {counts}")
    assert counts["shown"] > 2000, counts  # the map is drawn where the network was unsure
    assert counts["opacity 0.3"] < counts["shown"], counts  # fainter
    assert counts["hidden again"] < 50, counts  # and gone again
