"""The first-run page: the one-time link opens a form that says the password rule, creates the
first admin and logs them in; refused (with the reason) for a wrong, spent or expired link and
once any account exists; concurrent submissions create one admin."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spineseg.store import accounts
from spineseg.web.app import create_app
from tests.web.test_sessions_and_pages import HTML, csrf_from
from tests.web.web_helpers import add_user, make_settings, register_test_model

PASSWORD = "a long password"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def fresh_token(client: TestClient) -> str:
    return client.app.state.first_run.take_token()


def submit(client: TestClient, token: str, **fields: str):
    page = client.get(f"/setup?token={token}", headers=HTML)  # a refused page has the session's token too
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    data = {"token": token, "username": "ada", "password": PASSWORD, "password_again": PASSWORD,
            "csrf_token": csrf} | fields
    return client.post("/setup", data=data, headers=HTML, follow_redirects=False)


def test_the_link_creates_the_admin_and_logs_in(client: TestClient) -> None:
    token = fresh_token(client)
    assert token
    login = client.get("/login", headers=HTML)
    assert 'id="no-account-yet"' in login.text and "one-time" in login.text
    page = client.get(f"/setup?token={token}", headers=HTML)
    assert page.status_code == 200 and "Create the first admin account" in page.text
    assert "at least 8 characters" in page.text and 'minlength="8"' in page.text

    short = submit(client, token, password="short", password_again="short")
    assert short.status_code == 422 and "Password: must be at least 8 characters" in short.text
    differ = submit(client, token, password_again="another long one")
    assert differ.status_code == 422 and "differ" in differ.text and 'value="ada"' in differ.text
    no_csrf = client.post("/setup", data={"token": token, "username": "ada", "password": PASSWORD,
                                          "password_again": PASSWORD}, headers=HTML)
    assert no_csrf.status_code == 403

    created = submit(client, token)
    assert created.status_code == 303 and created.headers["location"] == "/studies"
    studies = client.get("/studies", headers=HTML)
    assert studies.status_code == 200 and "ada (admin)" in studies.text

    again = client.get(f"/setup?token={token}", headers=HTML)
    assert again.status_code == 410 and "exists already" in again.text
    assert submit(client, token, username="eve").status_code == 410
    assert 'id="no-account-yet"' not in TestClient(client.app).get("/login", headers=HTML).text
    with client.app.state.services.database.session() as session:
        assert [(u.username, u.role) for u in accounts.list_users(session)] == [("ada", "admin")]
        assert any(e.action == "user.create" and e.target == "ada" for e in accounts.recent_events(session))


def test_a_wrong_or_expired_link_is_refused_with_the_reason(client: TestClient) -> None:
    token = fresh_token(client)
    wrong = client.get("/setup?token=not-the-token", headers=HTML)
    assert wrong.status_code == 404 and "not valid" in wrong.text
    assert client.get("/setup", headers=HTML).status_code == 404
    link = client.app.state.first_run
    link._expires_at = 0.0  # 30 minutes later
    expired = client.get(f"/setup?token={token}", headers=HTML)
    assert expired.status_code == 410 and "expired" in expired.text and "restart" in expired.text
    assert submit(client, token).status_code == 410
    with client.app.state.services.database.session() as session:
        assert not accounts.any_user_exists(session)


def test_refused_when_an_account_exists_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    add_user(settings, "bo", "viewer")
    with TestClient(create_app(settings)) as client:
        assert client.app.state.first_run.take_token() is None
        refused = client.get("/setup?token=anything", headers=HTML)
        assert refused.status_code == 410 and "exists already" in refused.text


def test_concurrent_submissions_create_one_admin(client: TestClient) -> None:
    token = fresh_token(client)
    browsers = [TestClient(client.app) for _ in range(4)]
    forms = []
    for i, browser in enumerate(browsers):
        page = browser.get(f"/setup?token={token}", headers=HTML)
        forms.append({"token": token, "username": f"admin{i}", "password": PASSWORD, "password_again": PASSWORD,
                      "csrf_token": csrf_from(page.text)})
    barrier = threading.Barrier(len(browsers))
    codes: list[int] = []

    def post(i: int) -> None:
        barrier.wait()
        codes.append(browsers[i].post("/setup", data=forms[i], headers=HTML, follow_redirects=False).status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(browsers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(codes) == [303, 410, 410, 410]
    with client.app.state.services.database.session() as session:
        assert len(accounts.list_users(session)) == 1
