"""Browser test of issue 28 item 3 on a real ``spineseg serve``: cancelling a training run asks
first (saying what happens), "No" leaves it running, "Yes" ends it as *cancelled* (its own
state, shown as a notice, never "failed ... exited with code -15") on the run page and in the
list of runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.training_helpers import BASE_VERSION, case_parts, register_tiny_base
from tests.web.web_helpers import add_user, bearer, make_settings

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]

LONG_RUN = {"epochs": 50, "steps_per_epoch": 100, "batch_size": 2, "patch_size": 32}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    data_dir = tmp_path_factory.mktemp("train-cancel-browser")
    settings = make_settings(data_dir)
    register_tiny_base(settings)
    token = add_user(settings, "rosa", "researcher")
    live = LiveServer(data_dir)
    live.start()
    yield live, token
    live.stop()


def _start_run(server: LiveServer, token: str, tmp_path: Path) -> str:
    headers = bearer(token)
    dataset = httpx.post(f"{server.url}/api/datasets", json={"name": "to-cancel"}, headers=headers).json()
    for patient, seed in (("C1", 1), ("C2", 2)):
        added = httpx.post(f"{server.url}/api/datasets/{dataset['id']}/cases", headers=headers, timeout=60,
                           files=case_parts(tmp_path / patient, seed),
                           data={"patient": patient, "site": "north", "convention": "totalsegmentator"})
        assert added.status_code == 201, added.text
    run = httpx.post(f"{server.url}/api/training", headers=headers,
                     json={"dataset_id": dataset["id"], "base": BASE_VERSION, "settings": LONG_RUN})
    assert run.status_code == 202, run.text
    return run.json()["id"]


def _run(server: LiveServer, token: str, run_id: str) -> dict:
    return httpx.get(f"{server.url}/api/training/{run_id}", headers=bearer(token)).json()


def test_cancelling_a_training_run_asks_first_and_ends_cancelled(served: tuple[LiveServer, str], browser,
                                                                  tmp_path: Path) -> None:
    server, token = served
    run_id = _start_run(server, token, tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server, "rosa")
    page.goto(f"{server.url}/training/{run_id}")
    page.wait_for_function("() => document.getElementById('run-status').textContent === 'running'", timeout=60_000)

    page.click("#run-cancel-open")
    assert page.locator("#run-cancel-confirm").is_visible()
    text = page.inner_text("#run-cancel-text")
    assert "no model version is registered" in text and "cancelled" in text
    page.click("#run-cancel-no")  # changed her mind: nothing is asked of the server
    assert page.locator("#run-cancel-confirm").is_hidden()
    time.sleep(1)
    run = _run(server, token, run_id)
    assert run["status"] == "running" and not run["cancel_requested"]

    page.click("#run-cancel-open")
    with page.expect_navigation():
        page.click("#run-cancel-yes")
    page.wait_for_function("() => document.getElementById('run-status').textContent === 'cancelled'", timeout=60_000)
    error = page.locator("#run-error")
    assert "nothing was registered" in error.inner_text() and "exited with code" not in error.inner_text()
    assert error.get_attribute("class") == "notice"
    assert page.locator("#run-cancel").is_hidden()
    assert _run(server, token, run_id)["status"] == "cancelled"

    page.goto(f"{server.url}/training")
    row = page.locator(f"#runs tr:has(a[href='/training/{run_id}'])")
    assert "cancelled" in row.inner_text() and "failed" not in row.inner_text()
    page.close()
