"""Forms that keep the user's work, in a real browser against a real server: the training form
comes back with the values typed and the message beside the field; Back after an upload lands
on the upload page (the job page replaced itself); an expired session, on a page or during an
upload, leads to the login page saying so and then back to the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from spineseg.store.database import open_database
from tests.model.conftest import write_phantom_case
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.training_helpers import case_parts, register_tiny_base
from tests.web.web_helpers import PASSWORD, add_user, bearer, make_settings

RESULT_TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("forms-data")
    settings = make_settings(data_dir)
    register_tiny_base(settings)
    token = add_user(settings, "rhea", "researcher")
    live = LiveServer(data_dir)
    live.start()
    live.token = token  # type: ignore[attr-defined]
    live.settings = settings  # type: ignore[attr-defined]
    yield live
    live.stop()


def log_in(page, server: LiveServer, path: str) -> None:
    page.goto(f"{server.url}{path}")
    page.fill("input[name=username]", "rhea")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")


def end_all_sessions(server: LiveServer) -> None:
    """What an expiry does: the session rows are gone, the browser still sends its cookie."""
    database = open_database(server.settings.sqlalchemy_url)  # type: ignore[attr-defined]
    with database.session() as session:
        session.execute(text("DELETE FROM web_sessions"))
    database.dispose()


def test_training_form_keeps_values_and_shows_the_message_beside_the_field(server: LiveServer, browser,
                                                                           tmp_path: Path) -> None:
    headers = bearer(server.token)  # type: ignore[attr-defined]
    created = httpx.post(f"{server.url}/api/datasets", json={"name": "form-set"}, headers=headers).json()
    added = httpx.post(f"{server.url}/api/datasets/{created['id']}/cases", files=case_parts(tmp_path / "a", 1),
                       data={"patient": "A"}, headers=headers, timeout=60)
    assert added.status_code == 201, added.text
    page = browser.new_page()
    log_in(page, server, "/training")
    page.fill("#train-epochs", "0")
    page.fill("#train-steps_per_epoch", "7")
    page.fill("#train-batch_size", "3")
    page.fill("#train-notes", "my careful settings")
    with page.expect_navigation():
        page.click("#train-button")
    assert page.url.endswith("/training")
    message = page.locator("#error-epochs")
    assert message.is_visible() and "greater than or equal to 1" in message.inner_text()
    # beside its field: inside the same label as the epochs input
    assert page.locator("label", has=page.locator("#train-epochs")).locator("#error-epochs").count() == 1
    assert page.get_attribute("#train-epochs", "aria-invalid") == "true"
    assert (page.input_value("#train-epochs"), page.input_value("#train-steps_per_epoch"),
            page.input_value("#train-batch_size"), page.input_value("#train-notes")) == (
        "0", "7", "3", "my careful settings")
    assert page.locator("#error-steps_per_epoch").count() == 0
    runs = httpx.get(f"{server.url}/api/training", headers=headers).json()
    assert runs == []  # nothing was started
    page.reload()  # a reload is a GET: nothing is sent again, the message was shown once
    assert page.locator("#error-epochs").count() == 0
    page.close()


def test_back_after_an_upload_lands_on_the_upload_page(server: LiveServer, browser, tmp_path: Path) -> None:
    ct, _labels = write_phantom_case(tmp_path / "study", seed=3)
    page = browser.new_page()
    log_in(page, server, "/upload")
    assert page.url.endswith("/upload")
    page.set_input_files("#files", str(ct))
    page.click("#upload-button")
    page.wait_for_url("**/studies/*", timeout=RESULT_TIMEOUT_MS)
    page.go_back()
    page.wait_for_load_state()
    assert page.url.endswith("/upload"), page.url  # not the job page, which would forward again
    page.close()


def test_expired_session_leads_to_login_and_back(server: LiveServer, browser, tmp_path: Path) -> None:
    page = browser.new_page()
    log_in(page, server, "/models")
    end_all_sessions(server)
    page.goto(f"{server.url}/models")
    assert "/login" in page.url and page.locator("#session-expired").is_visible()
    log_in_here(page)
    assert page.url == f"{server.url}/models"

    ct, _labels = write_phantom_case(tmp_path / "late", seed=5)
    page.goto(f"{server.url}/upload")
    page.set_input_files("#files", str(ct))
    end_all_sessions(server)
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/login\?expired=1&next=%2Fupload$"), timeout=30_000)
    assert page.locator("#session-expired").is_visible()
    log_in_here(page)
    assert page.url == f"{server.url}/upload"
    page.close()


def log_in_here(page) -> None:
    page.fill("input[name=username]", "rhea")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
