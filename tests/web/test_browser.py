"""Browser tests: Playwright driving Debian's Chromium against a real ``spineseg serve``.

Skipped with the reason when /usr/bin/chromium is absent (CI installs it: see .ci/run)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from spineseg.imaging.io import load_volume
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.web_helpers import PASSWORD, add_user, make_settings, register_test_model

RESULT_TIMEOUT_MS = 120_000
SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("browser-data")
    settings = make_settings(data_dir)
    register_test_model(settings)
    add_user(settings, "carla", "clinician")
    add_user(settings, "victor", "viewer")
    live = LiveServer(data_dir)
    live.start()
    yield live
    live.stop()


def log_in(page, server: LiveServer, username: str) -> None:
    page.goto(f"{server.url}/upload")
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    # The login page's own address (/login?next=/upload) already matches "**/upload", so waiting
    # for the URL alone could return before the upload page and its scripts have loaded.
    with page.expect_navigation():
        page.click("button[type=submit]")


def canvas_has_picture(page) -> bool:
    shot = Image.open(io.BytesIO(page.locator("#viewer").screenshot())).convert("L")
    pixels = np.asarray(shot)
    return bool((pixels > 30).mean() > 0.02 and pixels.std() > 5)


def test_clinician_uploads_dicom_views_result_and_downloads_mask(
    server: LiveServer, browser, shared_cases: Path, tmp_path: Path
) -> None:
    folder = shared_cases / "ts-dicom-thorax" / "dicom"
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    page.set_input_files("#files", [str(p) for p in sorted(folder.iterdir())])
    page.click("#upload-button")
    page.wait_for_url("**/studies/*", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("#result[data-viewer-ready=true]", timeout=60_000)
    page.wait_for_timeout(500)
    assert canvas_has_picture(page), "the NiiVue canvas stayed empty"
    page.click("[data-view=render]")
    page.wait_for_timeout(300)
    assert canvas_has_picture(page), "the 3D view drew nothing"
    page.click("[data-view=multi]")
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "result-page.png"), full_page=True)

    with page.expect_download() as info:
        page.click("#download-mask")
    saved = tmp_path / "mask.nii.gz"
    info.value.save_as(saved)
    mask = nib.load(str(saved))
    reference = load_volume(folder)
    assert mask.shape == reference.shape
    np.testing.assert_allclose(mask.affine, reference.affine, atol=1e-4)
    page.close()


def test_upload_with_truth_shows_dice(server: LiveServer, browser, shared_cases: Path) -> None:
    case = shared_cases / "ts-abdomen-small"
    page = browser.new_page()
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    page.set_input_files("#files", str(case / "ct.nii.gz"))
    page.set_input_files("#truth", str(case / "labels.nii.gz"))
    page.click("#upload-button")
    page.wait_for_url("**/studies/*", timeout=RESULT_TIMEOUT_MS)
    dice_text = page.inner_text("#metric-dice")
    dice = float(dice_text) if dice_text != "undefined" else None
    assert dice is None or 0.0 <= dice <= 1.0
    assert page.locator("#metrics").is_visible()
    page.close()


def test_bad_file_error_is_shown_next_to_the_field(server: LiveServer, browser, tmp_path: Path) -> None:
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"not a nifti")
    page = browser.new_page()
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    page.set_input_files("#files", str(bad))
    page.click("#upload-button")
    page.wait_for_selector("#files-error:not([hidden])")
    assert "scan.nii.gz" in page.inner_text("#files-error")
    page.close()


def test_anonymous_is_sent_to_login_and_viewer_cannot_upload(server: LiveServer, browser) -> None:
    page = browser.new_page()
    page.goto(f"{server.url}/studies")
    assert "/login" in page.url
    log_in(page, server, "victor")
    page.wait_for_load_state()
    assert "may not upload" in page.inner_text("main")
    page.goto(f"{server.url}/studies")
    assert page.locator("a[href='/upload']").count() == 0
    page.close()


def test_drag_and_drop_upload_reaches_the_job_page(server: LiveServer, browser, tmp_path: Path) -> None:
    import base64

    from tests.web.test_api_studies import phantom_nifti

    ct, _truth = phantom_nifti(tmp_path)
    page = browser.new_page()
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        ["dropped.nii.gz", base64.b64encode(ct).decode()],
    )
    page.wait_for_function("() => document.getElementById('chosen').textContent === 'dropped.nii.gz'")
    page.click("#upload-button")
    page.wait_for_url("**/studies/*", timeout=RESULT_TIMEOUT_MS)
    assert page.inner_text("h1").startswith("Study ")  # the file's name is not kept (it may carry PHI)
    page.close()


def test_job_page_shows_queue_position_and_cancels(browser, tmp_path: Path) -> None:
    from tests.web.test_api_studies import phantom_nifti

    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    register_test_model(settings)
    add_user(settings, "carla", "clinician")
    idle = LiveServer(data_dir)
    idle.start(SPINESEG_WORKERS="0")  # jobs wait in the queue
    try:
        ct, _truth = phantom_nifti(tmp_path)
        (tmp_path / "ct.nii.gz").write_bytes(ct)
        page = browser.new_page()
        log_in(page, idle, "carla")
        page.wait_for_url("**/upload")
        page.set_input_files("#files", str(tmp_path / "ct.nii.gz"))
        page.click("#upload-button")
        page.wait_for_url("**/jobs/*")
        page.wait_for_function("() => document.getElementById('job-queue').textContent.includes('position 1')")
        assert page.inner_text("#job-status") == "queued"
        page.click("#cancel-form button")
        page.wait_for_function("() => document.getElementById('job-status').textContent === 'cancelled'")
        assert page.locator("#cancel-form").is_hidden()
        assert page.locator("#job-next").is_visible() and "Upload a study" in page.inner_text("#job-next")
        assert page.inner_text("#job-time").startswith("elapsed ")
        page.close()
    finally:
        idle.stop()


def test_upload_controls_are_reachable_by_keyboard(server: LiveServer, browser) -> None:
    page = browser.new_page()
    # Playwright turns file-chooser interception on without waiting for it when the first
    # listener is added; a listener kept for the whole page makes it on long before any key.
    page.on("filechooser", lambda _chooser: None)
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    page.focus("#drop-zone")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "files"  # "Choose files" takes the focus
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    chooser.value.set_files([])  # close the first chooser: Chromium opens one at a time
    page.focus("#drop-zone")
    with page.expect_file_chooser():
        page.keyboard.press("Enter")  # the drop zone opens the chooser too
    assert page.locator("link[rel=icon]").count() == 1
    page.close()
