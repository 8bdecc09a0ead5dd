"""Browser walk through the research pages with Playwright on Debian's Chromium against a real
``spineseg serve``: create a dataset, upload two labelled cases, set the split, start a tiny
fine-tune, watch the live curves draw, see the new version on the models page and promote it.

Skipped with the reason when /usr/bin/chromium is absent (CI installs it: see .ci/run).
Screenshots of the training page mid-run and of the models page go to
``$SPINESEG_SCREENSHOT_DIR`` when it is set."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.model.conftest import write_phantom_case
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.training_helpers import BASE_VERSION, register_tiny_base
from tests.web.web_helpers import PASSWORD, add_user, bearer, make_settings

SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")
RUN_TIMEOUT_MS = 120_000

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("train-browser-data")
    settings = make_settings(data_dir)
    register_tiny_base(settings, "tiny-alt", seed=1)  # an older version to re-run studies with
    register_tiny_base(settings)
    live = LiveServer(data_dir)
    live.token = add_user(settings, "rhea", "researcher")  # type: ignore[attr-defined]
    live.start()
    yield live
    live.stop()


def payload(path: Path) -> dict:
    """A file for an input element, handed over as bytes (Playwright reads nothing itself)."""
    return {"name": path.name, "mimeType": "application/octet-stream", "buffer": path.read_bytes()}


def shoot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=True)


def log_in(page, server: LiveServer, path: str) -> None:
    page.goto(f"{server.url}{path}")
    page.fill("input[name=username]", "rhea")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def test_dataset_and_training_pages_end_to_end(server: LiveServer, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server, "/datasets")

    page.fill("#dataset-name", "browser-phantoms")
    page.click("#create-dataset button[type=submit]")
    page.wait_for_url("**/datasets/*")

    bad_ct, _ = write_phantom_case(tmp_path / "bad", seed=9)
    empty_labels = tmp_path / "bad" / "empty.nii.gz"
    empty_labels.write_bytes(b"not a label map")
    page.locator("#case-files").set_input_files(payload(bad_ct))
    page.locator("#case-truth").set_input_files(payload(empty_labels))
    page.fill("#case-patient", "P9")
    page.click("#case-button")
    page.wait_for_selector("#case-truth-error:not([hidden])")
    assert "empty.nii.gz" in page.inner_text("#case-truth-error")

    for patient, seed, site in (("P1", 1, "north"), ("P2", 2, "south")):
        ct, labels = write_phantom_case(tmp_path / patient, seed=seed)
        page.locator("#case-files").set_input_files(payload(ct))
        page.locator("#case-truth").set_input_files(payload(labels))
        page.fill("#case-patient", patient)
        page.fill("#case-site", site)
        page.click("#case-button")
        page.wait_for_function(f"() => document.querySelectorAll('tr[data-case-id]').length === {int(patient[1])}")
    assert page.inner_text("#case-count") == "2"

    for patient, split in (("P1", "train"), ("P2", "val")):
        choice = page.locator(f"select[name=split-{patient}]")
        choice.select_option(split)
        assert choice.input_value() == split
    with page.expect_navigation():
        page.click("#split-form button[type=submit]")
    assert "train 1 / val 1 / test 0" in page.inner_text("#dataset-summary")

    page.click("text=Train on this dataset")
    page.wait_for_url("**/training?dataset=*")
    assert page.input_value("#train-base") == BASE_VERSION
    for field, value in (("epochs", "2"), ("steps_per_epoch", "15"), ("batch_size", "2"), ("patch_size", "32")):
        page.fill(f"#train-{field}", value)
    with page.expect_navigation(url=re.compile(r"/training/[0-9a-f]{32}$")):
        page.click("#train-button")

    page.wait_for_function("() => Number(document.getElementById('loss-chart').dataset.points || 0) >= 5",
                           timeout=RUN_TIMEOUT_MS)
    assert page.locator("#loss-chart polyline").count() == 1
    page.wait_for_function("() => Number(document.getElementById('dice-chart').dataset.points || 0) >= 1",
                           timeout=RUN_TIMEOUT_MS)
    shoot(page, "training-page.png")
    page.wait_for_function("() => document.getElementById('run-status').textContent === 'done'", timeout=RUN_TIMEOUT_MS)
    assert page.inner_text("#run-percent") == "100 %"
    assert page.locator("#run-cancel").is_hidden()
    version_id = page.inner_text("#run-version-link").strip()
    assert version_id and version_id != BASE_VERSION
    page.wait_for_function("() => document.getElementById('run-log').textContent.includes('registered')")

    page.click("#run-version-link")
    page.wait_for_url("**/models")
    row = page.locator(f"tr[data-version='{version_id}']")
    assert BASE_VERSION in row.inner_text() and "browser-phantoms" in row.inner_text()
    assert version_id in page.inner_text("#lineage")
    with page.expect_navigation(url=re.compile(rf"/models/{version_id}/promote$")):
        row.locator("a.promote").click()
    figures = page.locator("#promote-figures")
    assert version_id in figures.locator("tr[data-role='candidate']").inner_text()
    assert BASE_VERSION in figures.locator("tr[data-role='current production']").inner_text()
    shoot(page, "promote-confirm.png")
    if page.locator("#promote-confirm").count():  # lower or not comparable: the box must be ticked
        page.check("#promote-confirm")
    with page.expect_navigation(url=re.compile(r"/models$")):
        page.click("#promote-button")
    assert "production" in page.locator(f"tr[data-version='{version_id}']").inner_text()
    assert "rhea" in page.inner_text("#history")
    shoot(page, "models-page.png")
    page.close()


def test_rerun_with_another_version_site_tag_and_evaluation_by_site(server: LiveServer, browser,
                                                                    tmp_path: Path) -> None:
    ct, labels = write_phantom_case(tmp_path / "study", seed=4)
    headers = bearer(server.token)  # type: ignore[attr-defined]
    upload = httpx.post(f"{server.url}/api/studies", headers=headers, timeout=30,
                        files=[("files", ("ct.nii.gz", ct.read_bytes())),
                               ("truth", ("labels.nii.gz", labels.read_bytes()))])
    assert upload.status_code == 202, upload.text
    study_id, job_id = upload.json()["study_id"], upload.json()["job_id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/api/jobs/{job_id}", headers=headers).json()["status"] != "done":
        assert time.monotonic() < deadline, "segmentation did not finish"
        time.sleep(0.3)
    other = next(v["id"] for v in httpx.get(f"{server.url}/api/models", headers=headers).json()["versions"]
                 if not v["is_production"])

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server, f"/studies/{study_id}")
    page.wait_for_selector(f"#rerun-version option[value='{other}']", state="attached")
    page.fill("#study-site", "north")
    page.click("#site-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('study-site').value === 'north'")
    page.locator("#rerun-version").select_option(other)
    page.click("#rerun-button")  # asks first: nothing is queued before the confirmation
    page.wait_for_selector("#rerun-confirm:not([hidden])")
    assert other in page.inner_text("#rerun-confirm-text")
    with page.expect_navigation(url=re.compile(r"/jobs/[0-9a-f]{32}$")):
        page.click("#rerun-confirm-button")
    page.wait_for_url(re.compile(rf"/studies/{study_id}$"), timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector("#runs-table")
    assert other in page.inner_text("#runs-table")  # the new run, beside the first one

    page.goto(f"{server.url}/evaluation?ids={study_id}")
    page.wait_for_selector("#by-site-table tr[data-site=north]")
    assert page.inner_text("#by-site-table tr[data-site=north] td:nth-child(2)") == "1"
    page.close()
