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
