"""The upload page sends files through the resumable API: progress, a failed chunk retried, and
a reload mid-upload that continues from the server's offsets (Playwright + Debian Chromium
against a real ``spineseg serve``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import nibabel as nib
import pytest

from tests.conftest import make_phantom
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.web_helpers import add_user, make_settings, register_test_model

SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")
CHUNK_ROUTE = "**/api/uploads/*/files/*"
AFTER_UPLOAD = re.compile(r"/(jobs|studies)/[0-9a-f]{32}")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("resumable-browser-data")
    settings = make_settings(data_dir)
    register_test_model(settings)
    add_user(settings, "carla", "clinician")
    live = LiveServer(data_dir)
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom as an uncompressed NIfTI: 184 kB, many chunks at the tiny chunk size set below."""
    volume, _mask = make_phantom()
    path = tmp_path_factory.mktemp("resumable-ct") / "phantom.nii"
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(path))
    return path


def open_upload_page(browser, server: LiveServer, chunk_bytes: int):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    page.evaluate("(n) => { document.getElementById('upload-form').dataset.chunkBytes = String(n); }", chunk_bytes)
    return page


def test_upload_shows_progress_and_retries_a_failed_chunk(server: LiveServer, browser, ct_file: Path) -> None:
    page = open_upload_page(browser, server, 16 * 1024)
    seen = {"chunks": 0}

    def fail_the_third_chunk_once(route) -> None:
        seen["chunks"] += 1
        if seen["chunks"] == 3:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(CHUNK_ROUTE, fail_the_third_chunk_once)
    page.set_input_files("#files", str(ct_file))
    page.click("#upload-button")
    page.wait_for_function("() => document.getElementById('upload-status').textContent.includes('retrying')")
    status = page.inner_text("#upload-status")
    assert re.search(r"32\.0 kB of 18\d\.\d kB \(1\d %\)", status), status
    assert 0 < page.eval_on_selector("#upload-progress", "el => el.value") < 1
    page.wait_for_url(AFTER_UPLOAD, timeout=60_000)
    assert seen["chunks"] > 12  # every chunk went through the resumable API, the failed one twice
    assert page.evaluate("localStorage.getItem('spineseg.resumableUpload')") is None
    page.close()


def test_a_reload_mid_upload_offers_to_resume_and_continues_from_the_servers_offset(
    server: LiveServer, browser, ct_file: Path
) -> None:
    page = open_upload_page(browser, server, 8 * 1024)
    passed = {"chunks": 0}

    def stall_after_five_chunks(route) -> None:  # the network "breaks" after 40 kB
        if passed["chunks"] < 5:
            passed["chunks"] += 1
            route.continue_()
        else:
            route.abort("internetdisconnected")

    page.route(CHUNK_ROUTE, stall_after_five_chunks)
    page.set_input_files("#files", str(ct_file))
    page.click("#upload-button")
    page.wait_for_function("() => document.getElementById('upload-status').textContent.includes('retrying')")
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "upload-mid-upload.png"))
    assert "40.0 kB of" in page.inner_text("#upload-status")

    page.unroute(CHUNK_ROUTE)
    page.reload()
    page.wait_for_selector("#resume-notice:not([hidden])")
    assert "40.0 kB of 18" in page.inner_text("#resume-text")
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "upload-resume-offer.png"))
    offsets: list[int] = []
    page.on("request", lambda r: offsets.append(int(parse_qs(urlsplit(r.url).query)["offset"][0]))
            if r.method == "PUT" else None)
    page.evaluate("() => { document.getElementById('upload-form').dataset.chunkBytes = '8192'; }")
    page.set_input_files("#files", str(ct_file))
    assert "continues the interrupted upload" in page.inner_text("#chosen")
    page.click("#upload-button")
    page.wait_for_url(AFTER_UPLOAD, timeout=60_000)
    assert offsets and offsets[0] == 5 * 8192, offsets  # nothing sent twice
    assert page.evaluate("localStorage.getItem('spineseg.resumableUpload')") is None
    page.close()
