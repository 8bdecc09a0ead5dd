"""User administration and audit trail: admin only, through the API and the page forms."""

from __future__ import annotations

import re

from tests.web.conftest import WebEnv
from tests.web.test_sessions_and_pages import csrf_from, logged_in_client
from tests.web.web_helpers import PASSWORD, bearer


def test_admin_creates_changes_and_disables_users_over_the_api(web_env: WebEnv) -> None:
    admin = bearer(web_env.tokens["admin"])
    created = web_env.client.post("/api/users", headers=admin,
                                  json={"username": "nina", "password": PASSWORD, "role": "viewer"})
    assert created.status_code == 201 and created.json()["role"] == "viewer"
    duplicate = web_env.client.post("/api/users", headers=admin,
                                    json={"username": "nina", "password": PASSWORD, "role": "viewer"})
    assert duplicate.status_code == 422 and "already exists" in duplicate.json()["detail"]
    changed = web_env.client.patch("/api/users/nina", headers=admin, json={"role": "clinician"})
    assert changed.json()["role"] == "clinician"
    assert web_env.client.patch("/api/users/admin", headers=admin, json={"active": False}).status_code == 422

    client = logged_in_client(web_env, "nina")
    assert client.get("/api/studies").status_code == 200
    web_env.client.patch("/api/users/nina", headers=admin, json={"active": False})
    assert client.get("/api/studies").status_code == 401  # a disabled user's session stops working

    actions = [e["action"] for e in web_env.client.get("/api/audit", headers=admin).json()]
    assert "user.create" in actions and "user.change" in actions and "login" in actions


def test_only_admins_administer(web_env: WebEnv) -> None:
    for role in ("viewer", "clinician", "researcher"):
        headers = bearer(web_env.tokens[role])
        assert web_env.client.get("/api/users", headers=headers).status_code == 403
        assert web_env.client.post("/api/users", headers=headers,
                                   json={"username": "x", "password": PASSWORD, "role": "admin"}).status_code == 403


def test_admin_page_forms(web_env: WebEnv) -> None:
    client = logged_in_client(web_env, "admin")
    page = client.get("/admin")
    assert page.status_code == 200 and 'id="users"' in page.text
    token = csrf_from(page.text)
    short = client.post("/admin/users", data={"username": "omar", "password": "short", "role": "viewer",
                                               "csrf_token": token}, follow_redirects=False)
    assert short.status_code == 303 and short.headers["location"] == "/admin"  # post/redirect/get
    again = client.get("/admin")
    beside = re.search(r'id="error-new-password">([^<]*)<', again.text)
    assert beside and "at least 8 characters" in beside.group(1)
    assert 'name="username" required value="omar"' in again.text and "<option selected>viewer</option>" in again.text
    assert "short" not in again.text.split('id="error-new-password"')[0].split("New user")[1]  # no password kept
    made = client.post("/admin/users", data={"username": "omar", "password": PASSWORD, "role": "viewer",
                                              "csrf_token": token}, follow_redirects=False)
    assert made.status_code == 303
    client.post("/admin/users/omar", data={"role": "researcher", "active": "1", "csrf_token": token})
    row = re.search(r'<tr data-user="omar">.*?</tr>', client.get("/admin").text, re.S).group(0)
    assert "<option selected>researcher</option>" in row
    no_csrf = client.post("/admin/users/omar", data={"role": "admin", "active": "1"})
    assert no_csrf.status_code == 403
    me = "admin"  # the logged-in administrator
    demoted = client.post(f"/admin/users/{me}", data={"role": "viewer", "active": "1", "csrf_token": token})
    assert demoted.status_code == 200 and demoted.url.path == "/admin"  # not a dead-end "Error 422" page
    assert "you cannot disable, demote or delete yourself" in demoted.text and f'id="error-user-{me}"' in demoted.text
    assert 'href="/studies"' in demoted.text and "Error 422" not in demoted.text


def test_downloads_are_audited(web_env: WebEnv, tmp_path) -> None:
    from tests.web.test_api_studies import phantom_nifti, wait_for_job

    ct, _truth = phantom_nifti(tmp_path)
    token = web_env.tokens["clinician"]
    ids = web_env.client.post("/api/studies", files=[("files", ("ct.nii.gz", ct, "x"))], headers=bearer(token)).json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    assert web_env.client.get(f"/api/studies/{ids['study_id']}/mask.nii.gz", headers=bearer(token)).status_code == 200
    events = web_env.client.get("/api/audit", headers=bearer(web_env.tokens["admin"])).json()
    assert any(e["action"] == "download" and e["target"] == ids["study_id"] and e["username"] == "clinician"
               and e["detail"] == f"mask.nii.gz run={ids['job_id']}" for e in events)  # which run's file


def test_a_password_change_ends_existing_sessions(web_env: WebEnv) -> None:
    admin = bearer(web_env.tokens["admin"])
    web_env.client.post("/api/users", headers=admin, json={"username": "pat", "password": PASSWORD, "role": "viewer"})
    client = logged_in_client(web_env, "pat")
    assert client.get("/api/studies").status_code == 200
    web_env.client.patch("/api/users/pat", headers=admin, json={"password": "a brand new password"})
    assert client.get("/api/studies").status_code == 401


def test_deleting_a_user_says_what_it_did_to_their_tokens_and_studies(web_env: WebEnv) -> None:
    """Issue 28 item 4: the answer (and the audit row) say what the page's confirmation says."""
    from tests.web.web_helpers import add_user

    admin = bearer(web_env.tokens["admin"])
    token = add_user(web_env.settings, "leaving", "clinician")
    assert web_env.client.get("/api/studies", headers=bearer(token)).status_code == 200
    page = logged_in_client(web_env, "admin").get("/admin")
    assert "Delete the user <strong>leaving</strong>?" in page.text and "1 API token (1 still active) is deleted" \
        in page.text and "0 studies stay" in page.text
    gone = web_env.client.delete("/api/users/leaving", headers=admin)
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"deleted": "leaving", "studies_kept": 0, "tokens_deleted": 1, "uploads_discarded": 0}
    assert web_env.client.get("/api/studies", headers=bearer(token)).status_code == 401  # the token went with her
    again = web_env.client.delete("/api/users/leaving", headers=admin)
    assert again.status_code == 422 and "leaving" in again.json()["detail"]
    events = web_env.client.get("/api/audit", headers=admin).json()
    deleted = next(e for e in events if e["action"] == "user.delete" and e["target"] == "leaving")
    assert "1 tokens deleted" in deleted["detail"]
