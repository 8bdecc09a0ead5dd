"""The PACS pages in Debian's Chromium against a real ``spineseg serve`` and a real Orthanc:
search on "Import from PACS", import a series, wait for the result, "Send to PACS"; a PACS
that refuses our credentials shows its message on the page."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integrations.orthanc import PASSWORD, USERNAME, Orthanc, orthanc_available
from tests.integrations.thorax import PATIENT_ID, SERIES_UID, pacs_copy
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.web_helpers import PASSWORD as USER_PASSWORD
from tests.web.web_helpers import add_user, make_settings

RESULT_TIMEOUT_MS = 240_000
SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.shared_data, pytest.mark.slow,
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, shared_cases_dir: Path) -> Iterator[tuple[LiveServer, Orthanc]]:
    why = orthanc_available()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("pacs-browser")
    orthanc = Orthanc(root / "orthanc").start()
    orthanc.upload_folder(pacs_copy(shared_cases_dir, root / "ct")[0].parent)
    endpoints = root / "pacs.json"
    endpoints.write_text(json.dumps([
        {"name": "orthanc", "url": orthanc.dicomweb_url, "username": USERNAME, "password": PASSWORD},
        {"name": "wrong-password", "url": orthanc.dicomweb_url, "username": USERNAME, "password": "nope"}]))
    data_dir = root / "data"
    add_user(make_settings(data_dir), "carla", "clinician")
    live = LiveServer(data_dir)
    live.start(SPINESEG_PACS_ENDPOINTS=str(endpoints))
    try:
        yield live, orthanc
    finally:
        live.stop()
        orthanc.stop()


@pytest.fixture(scope="module")
def shared_cases_dir() -> Path:
    folder = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cases"
    if not (folder / "ts-dicom-thorax" / "dicom").is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def _shot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=True)


def test_import_from_pacs_then_send_the_seg_back(servers: tuple[LiveServer, Orthanc], browser) -> None:
    server, orthanc = servers
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server.url}/pacs")
    page.fill("input[name=username]", "carla")
    page.fill("input[name=password]", USER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/pacs")
    page.fill("input[name=patient_id]", PATIENT_ID)
    page.click("#pacs-search button[type=submit]")
    page.wait_for_selector("#pacs-series")
    assert page.inner_text("#pacs-count").startswith("1 series found")
    row = page.locator(f"tr[data-series-uid='{SERIES_UID}']")
    assert "Testpatient Pacs" in row.inner_text() and "2022-12-08" in row.inner_text()
    assert "CT Body 3.0" in row.inner_text()
    _shot(page, "pacs-import.png")
    before = orthanc.count()["CountInstances"]
    row.locator("button").click()
    page.wait_for_url("**/studies/*", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("#pacs-send:not([hidden])", timeout=30_000)
    assert "has not been sent back yet" in page.inner_text("#pacs-send-state")
    page.click("#pacs-send-button")
    page.wait_for_selector("#pacs-send-result:text-matches('^(Sent|Not sent)')", timeout=60_000)
    # the SEG first, then what the run has made so far of the levels SEG, the SR and the RTSTRUCT
    sent = re.match(r"Sent SEG((?: \+ (?:levels SEG|measurement SR|RTSTRUCT))*) of run \w{8} to \S+ \((\d+) stored\)",
                    page.inner_text("#pacs-send-result"))
    assert sent is not None, page.inner_text("#pacs-send-result")
    stored = int(sent.group(2))
    assert stored == 1 + sent.group(1).count(" + ")
    assert orthanc.count()["CountInstances"] == before + stored
    page.locator("#pacs-send").scroll_into_view_if_needed()
    _shot(page, "pacs-send.png")

    page.goto(f"{server.url}/pacs?endpoint=wrong-password&modality=CT")
    assert "refused our credentials while searching for series (HTTP 401)" in page.inner_text("#pacs-error")
    page.close()
