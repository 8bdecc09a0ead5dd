"""Server-side sessions and tokens: an old cookie is dead after logout, a password reset or
disabling the user, on every view route; tokens expire and are revoked; a deleted user's
studies stay, shown as a deleted user."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from spineseg.store import accounts
from spineseg.store.database import open_database
from spineseg.store.web_sessions import WebSession
from tests.web.conftest import WebEnv
from tests.web.test_sessions_and_pages import _upload_and_wait, csrf_from, logged_in_client
from tests.web.web_helpers import PASSWORD, add_user, bearer

HTML = {"Accept": "text/html"}
OPEN_ROUTES = {"/login", "/api/health", "/setup"}


@pytest.fixture(scope="module")
def study(web_env: WebEnv, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tests.web.test_api_studies import phantom_nifti

    ct, truth = phantom_nifti(tmp_path_factory.mktemp("ct"))
    job = _upload_and_wait(web_env, web_env.tokens["clinician"], [("files", ("ct.nii.gz", ct, "x")),
                                                                  ("truth", ("truth.nii.gz", truth, "x"))])
    assert job["status"] == "done", job
    return job


def _all_routes(routes: list) -> list:
    """Routes of the app, also those of included routers (FastAPI keeps those apart)."""
    found = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        found.extend(_all_routes(nested.routes) if nested is not None else [route])
    return found


def view_routes(env: WebEnv, study: dict) -> list[str]:
    """Every GET route of the app that needs a login, with its path parameters filled in."""
    values = {"study_id": study["study_id"], "job_id": study["id"]}
    paths = []
    for route in _all_routes(env.client.app.routes):
        if not isinstance(route, Route) or "GET" not in (route.methods or ()) or route.path.startswith("/static"):
            continue
        if route.path in OPEN_ROUTES:
            continue
        paths.append(re.sub(r"{(\w+)(:\w+)?}", lambda m: values.get(m.group(1), "1"), route.path))
    return sorted(set(paths))


def refused(response) -> bool:
    return response.status_code == 401 or (response.status_code == 303
                                           and response.headers["location"].startswith("/login"))


def test_after_logout_the_old_cookie_opens_no_view_route(web_env: WebEnv, study: dict) -> None:
    client = logged_in_client(web_env, "admin")
    paths = view_routes(web_env, study)
    assert len(paths) >= 19 and "/api/studies/{}/ct.nii.gz".format(study["study_id"]) in paths
    assert client.get(f"/api/studies/{study['study_id']}").status_code == 200
    old_cookies = dict(client.cookies)
    page = client.get("/studies")
    assert client.post("/logout", data={"csrf_token": csrf_from(page.text)}, follow_redirects=False).status_code == 303

    replay = TestClient(web_env.client.app, cookies=old_cookies)  # the cookie as it was before logout
    answers = {path: replay.get(path, headers=HTML, follow_redirects=False) for path in paths}
    assert all(refused(r) for r in answers.values()), {p: r.status_code for p, r in answers.items() if not refused(r)}


def test_the_cookie_holds_only_a_session_id(web_env: WebEnv) -> None:
    import base64
    import json

    client = logged_in_client(web_env, "viewer")
    payload = client.cookies["spineseg_session"].split(".")[0]
    data = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    assert list(data) == ["sid"]


def test_a_password_reset_by_an_admin_ends_the_users_sessions(web_env: WebEnv) -> None:
    add_user(web_env.settings, "pat", "viewer")
    victim = logged_in_client(web_env, "pat")
    assert victim.get("/api/studies").status_code == 200
    reset = web_env.client.patch("/api/users/pat", json={"password": "another long one"},
                                 headers=bearer(web_env.tokens["admin"]))
    assert reset.status_code == 200
    assert victim.get("/api/studies").status_code == 401
    client = TestClient(web_env.client.app)
    page = client.get("/login")
    assert client.post("/login", data={"username": "pat", "password": "another long one",
                                       "csrf_token": csrf_from(page.text)}, follow_redirects=False).status_code == 303


def test_the_admin_page_resets_a_password_and_deletes_a_user(web_env: WebEnv, study: dict) -> None:
    add_user(web_env.settings, "quinn", "clinician")
    quinn_token = add_user(web_env.settings, "quinn2", "clinician")
    admin = logged_in_client(web_env, "admin")
    csrf = csrf_from(admin.get("/admin").text)
    short = admin.post("/admin/users/quinn/password", data={"csrf_token": csrf, "password": "short"})
    assert short.url.path == "/admin" and 'id="error-user-quinn"' in short.text  # post/redirect/get
    assert "at least 8 characters" in short.text.split('id="error-user-quinn"')[1].split("</p>")[0]
    done = admin.post("/admin/users/quinn/password", data={"csrf_token": csrf, "password": "brand new pass"},
                      follow_redirects=False)
    assert done.status_code == 303
    # quinn2 owns a study; deleting quinn2 keeps it, owner shown as a deleted user
    from tests.web.test_api_studies import phantom_nifti

    ct, _truth = phantom_nifti(web_env.settings.data_dir / "..")
    owned = _upload_and_wait(web_env, quinn_token, [("files", ("ct.nii.gz", ct, "x"))])
    gone = admin.post("/admin/users/quinn2/delete", data={"csrf_token": csrf}, follow_redirects=False)
    assert gone.status_code == 303
    assert web_env.client.get("/api/studies", headers=bearer(quinn_token)).status_code == 401
    kept = web_env.client.get(f"/api/studies/{owned['study_id']}", headers=bearer(web_env.tokens["admin"]))
    assert kept.status_code == 200 and kept.json()["owner"] is None
    assert "deleted user" in admin.get("/studies").text
    assert "quinn2" not in [u["username"] for u in web_env.client.get(
        "/api/users", headers=bearer(web_env.tokens["admin"])).json()]
    self_delete = admin.post("/admin/users/admin/delete", data={"csrf_token": csrf})
    assert self_delete.url.path == "/admin" and "cannot disable, demote or delete yourself" in self_delete.text
    assert "admin" in [u["username"] for u in admin.get("/api/users").json()]


def test_disabling_a_user_ends_their_sessions(web_env: WebEnv) -> None:
    add_user(web_env.settings, "rae", "viewer")
    rae = logged_in_client(web_env, "rae")
    answer = web_env.client.patch("/api/users/rae", json={"active": False}, headers=bearer(web_env.tokens["admin"]))
    assert answer.status_code == 200
    assert rae.get("/api/studies").status_code == 401
    database = open_database(web_env.settings.sqlalchemy_url)
    with database.session() as session:
        user = accounts.get_user(session, username="rae")
        assert session.query(WebSession).filter_by(user_id=user.id).count() == 0
    database.dispose()


def test_tokens_are_listed_and_revoked_by_an_admin(web_env: WebEnv) -> None:
    token = add_user(web_env.settings, "sam", "viewer")
    admin = bearer(web_env.tokens["admin"])
    assert web_env.client.get("/api/studies", headers=bearer(token)).status_code == 200
    listed = web_env.client.get("/api/tokens", params={"username": "sam"}, headers=admin).json()
    assert [t["state"] for t in listed] == ["active"] and listed[0]["expires_at"]
    revoked = web_env.client.delete(f"/api/tokens/{listed[0]['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert web_env.client.get("/api/studies", headers=bearer(token)).status_code == 401
    assert web_env.client.delete("/api/tokens/999999", headers=admin).status_code == 422
    events = web_env.client.get("/api/audit", params={"action": "token.revoke"}, headers=admin).json()
    assert events[0]["target"] == str(listed[0]["id"])


def test_an_expired_token_is_refused(web_env: WebEnv) -> None:
    token = add_user(web_env.settings, "tess", "viewer")
    database = open_database(web_env.settings.sqlalchemy_url)
    with database.session() as session:
        row = accounts.list_tokens(session, username="tess")[0]
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    database.dispose()
    assert web_env.client.get("/api/studies", headers=bearer(token)).status_code == 401


def test_a_session_lookup_is_one_read_and_seen_is_written_at_most_once_a_minute(web_env: WebEnv) -> None:
    from sqlalchemy import event

    client = logged_in_client(web_env, "viewer")
    engine = web_env.client.app.state.services.database.engine
    statements: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:
        # Only statements on the session table: the in-process job and training workers share
        # the engine and poll their own tables meanwhile.
        if "web_sessions" in statement:
            statements.append(statement.split()[0].upper())

    client.get("/api/jobs/nonexistent")  # the first request may note last_seen
    event.listen(engine, "before_cursor_execute", note)
    try:
        for _ in range(5):
            assert client.get("/api/jobs/nonexistent").status_code == 404
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert statements == ["SELECT"] * 5  # per request one read of the session (with its user), no write


def test_login_uses_the_password(web_env: WebEnv) -> None:
    client = TestClient(web_env.client.app)
    page = client.get("/login")
    assert client.post("/login", data={"username": "viewer", "password": PASSWORD,
                                       "csrf_token": csrf_from(page.text)}, follow_redirects=False).status_code == 303
