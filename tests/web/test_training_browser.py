"""Browser walk through the research pages with Playwright on Debian's Chromium against a real
``spineseg serve``: create a dataset, upload two labelled cases, set the split, start a tiny
fine-tune, watch the live curves draw, see the new version on the models page and promote it.

Skipped with the reason when /usr/bin/chromium is absent (CI installs it: see .ci/run).
Screenshots of the training page mid-run and of the models page go to
``$SPINESEG_SCREENSHOT_DIR`` when it is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.model.conftest import write_phantom_case
from tests.web.live_server import LiveServer
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.web.training_helpers import BASE_VERSION, register_tiny_base
from tests.web.web_helpers import PASSWORD, add_user, make_settings

SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")
RUN_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("train-browser-data")
    settings = make_settings(data_dir)
    register_tiny_base(settings)
    add_user(settings, "rhea", "researcher")
    live = LiveServer(data_dir)
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shoot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=True)


def test_dataset_and_training_pages_end_to_end(server: LiveServer, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server.url}/datasets")
    page.fill("input[name=username]", "rhea")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/datasets")

    page.fill("#dataset-name", "browser-phantoms")
    page.click("#create-dataset button[type=submit]")
    page.wait_for_url("**/datasets/*")

    bad_ct, _ = write_phantom_case(tmp_path / "bad", seed=9)
    empty_labels = tmp_path / "bad" / "empty.nii.gz"
    empty_labels.write_bytes(b"not a label map")
    page.locator("#case-files").set_input_files(str(bad_ct))
    page.locator("#case-truth").set_input_files(str(empty_labels))
    page.fill("#case-patient", "P9")
    page.click("#case-button")
    page.wait_for_selector("#case-truth-error:not([hidden])")
    assert "empty.nii.gz" in page.inner_text("#case-truth-error")

    for patient, seed, site in (("P1", 1, "north"), ("P2", 2, "south")):
        ct, labels = write_phantom_case(tmp_path / patient, seed=seed)
        page.locator("#case-files").set_input_files(str(ct))
        page.locator("#case-truth").set_input_files(str(labels))
        page.fill("#case-patient", patient)
        page.fill("#case-site", site)
        page.click("#case-button")
        page.wait_for_function(f"document.querySelectorAll('tr[data-case-id]').length === {int(patient[1])}")
    assert page.inner_text("#case-count") == "2"

    page.select_option("select[name=split-P1]", "train")
    page.select_option("select[name=split-P2]", "val")
    page.click("#split-form button[type=submit]")
    page.wait_for_load_state()
    assert "train 1 / val 1 / test 0" in page.inner_text("#dataset-summary")

    page.click("text=Train on this dataset")
    page.wait_for_url("**/training?dataset=*")
    assert page.input_value("#train-base") == BASE_VERSION
    for field, value in (("epochs", "2"), ("steps_per_epoch", "15"), ("batch_size", "2"), ("patch_size", "32")):
        page.fill(f"#train-{field}", value)
    page.click("#train-button")
    page.wait_for_url("**/training/*")

    page.wait_for_function("Number(document.getElementById('loss-chart').dataset.points || 0) >= 5",
                           timeout=RUN_TIMEOUT_MS)
    assert page.locator("#loss-chart polyline").count() == 1
    page.wait_for_function("Number(document.getElementById('dice-chart').dataset.points || 0) >= 1",
                           timeout=RUN_TIMEOUT_MS)
    shoot(page, "training-page.png")
    page.wait_for_function("document.getElementById('run-status').textContent === 'done'", timeout=RUN_TIMEOUT_MS)
    assert page.inner_text("#run-percent") == "100 %"
    assert page.locator("#run-cancel").is_hidden()
    version_id = page.inner_text("#run-version-link").strip()
    assert version_id and version_id != BASE_VERSION
    page.wait_for_function("document.getElementById('run-log').textContent.includes('registered')")

    page.click("#run-version-link")
    page.wait_for_url("**/models")
    row = page.locator(f"tr[data-version='{version_id}']")
    assert BASE_VERSION in row.inner_text() and "browser-phantoms" in row.inner_text()
    assert version_id in page.inner_text("#lineage")
    row.locator("button.promote").click()
    page.wait_for_load_state()
    assert "production" in page.locator(f"tr[data-version='{version_id}']").inner_text()
    assert "rhea" in page.inner_text("#history")
    shoot(page, "models-page.png")
    page.close()
