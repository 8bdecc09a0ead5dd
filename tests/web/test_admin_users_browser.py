"""Browser test of issue 28 item 4 on a real ``spineseg serve``: deleting a user on the admin page
asks first and the confirmation says what happens to their studies and tokens; Cancel keeps
the user, Yes deletes them, their token stops working and their study stays without an owner."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.model.conftest import write_phantom_case
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

SCREENSHOT_DIR = os.environ.get("SPINESEG_SCREENSHOT_DIR")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("admin-users-browser")
    settings = make_settings(data_dir)
    register_test_model(settings)
    tokens = {"ada": add_user(settings, "ada", "admin"), "bo": add_user(settings, "bo", "clinician")}
    live = LiveServer(data_dir)
    live.start()
    yield live, tokens
    live.stop()


def test_deleting_a_user_asks_first_and_says_what_happens(served: tuple[LiveServer, dict[str, str]], browser,
                                                          tmp_path: Path) -> None:
    server, tokens = served
    ct, _labels = write_phantom_case(tmp_path / "bo", seed=3)
    upload = httpx.post(f"{server.url}/api/studies", headers=bearer(tokens["bo"]), timeout=60,
                        files=[("files", ("ct.nii.gz", ct.read_bytes(), "application/gzip"))])
    assert upload.status_code == 202, upload.text
    study_id = upload.json()["study_id"]

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server, "ada")
    page.goto(f"{server.url}/admin")
    row = page.locator("#users tr[data-user='bo']")
    assert row.locator("form.delete-user").is_hidden()
    assert page.locator("#users tr[data-user='ada'] .delete-user-open").count() == 0  # not herself
    row.locator(".delete-user-open").click()
    confirm = row.locator("form.delete-user")
    assert confirm.is_visible()
    text = " ".join(confirm.inner_text().split())
    assert "Delete the user bo?" in text
    assert "1 API token (1 still active) is deleted and stops working at once" in text
    assert "1 study stays with every run and file, listed as owned by “deleted user”" in text
    assert "only an admin can delete, re-run or rename it" in text
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "admin-delete-user.png"), full_page=True)

    confirm.locator(".delete-user-cancel").click()
    assert confirm.is_hidden()
    time.sleep(0.5)
    users = httpx.get(f"{server.url}/api/users", headers=bearer(tokens["ada"])).json()
    assert "bo" in [u["username"] for u in users]  # nothing happened without the confirmation
    assert httpx.get(f"{server.url}/api/studies", headers=bearer(tokens["bo"])).status_code == 200

    row.locator(".delete-user-open").click()
    with page.expect_navigation():
        confirm.locator("button[type=submit]").click()
    assert page.locator("#users tr[data-user='bo']").count() == 0
    assert httpx.get(f"{server.url}/api/studies", headers=bearer(tokens["bo"])).status_code == 401
    study = httpx.get(f"{server.url}/api/studies/{study_id}", headers=bearer(tokens["ada"])).json()
    assert study["id"] == study_id and study["owner"] is None  # the study stays, without an owner
    page.close()


def test_tokens_are_created_on_the_page_and_every_control_is_labelled(served: tuple[LiveServer, dict[str, str]],
                                                                       browser) -> None:
    """Issue 28 item 9: only the CLI could create API tokens; and the users table's role and
    active controls had no label a screen reader could read."""
    server, tokens = served
    add_user(make_settings(server.data_dir), "cy", "researcher")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log_in(page, server, "ada")
    page.goto(f"{server.url}/admin")
    unlabelled = page.evaluate("""() => [...document.querySelectorAll("main input:not([type=hidden]), main select")]
        .filter((el) => !el.labels?.length && !el.getAttribute("aria-label")).map((el) => el.outerHTML.slice(0, 80))""")
    assert unlabelled == []
    page.get_by_label("role of cy").select_option("clinician")  # reachable by its name
    assert page.get_by_label("cy is active").is_checked()

    form = page.locator("#token-form")
    form.get_by_label("For user").select_option("cy")
    form.get_by_label("What it is for").fill("nightly export")
    refused = httpx.post(f"{server.url}/api/tokens", headers=bearer(tokens["ada"]),
                         json={"username": "cy", "name": "x", "days": 0})  # the API's form of it
    assert refused.status_code == 422 and "1-3650 days" in refused.json()["detail"]
    form.get_by_label("Valid for days").fill("30")
    form.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-secret").input_value()
    assert secret.startswith("sst_") and "cy" in page.inner_text("#new-token")
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "admin-new-token.png"), full_page=False)
    assert httpx.get(f"{server.url}/api/studies", headers=bearer(secret)).status_code == 200  # it works at once
    row = page.locator("#tokens tr", has_text="nightly export")
    assert "cy" in row.inner_text() and "active" in row.inner_text()
    page.goto(f"{server.url}/admin")  # shown once: not on the page again
    assert secret not in page.content() and page.locator("#new-token").count() == 0
    page.close()
