"""Login sessions, cookie flags, CSRF on forms and cookie-authenticated API calls, role gates
on pages, and the server-rendered pages with real studies."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from spineseg.web.app import create_app
from tests.web.conftest import WebEnv
from tests.web.web_helpers import PASSWORD, add_user, bearer

HTML = {"Accept": "text/html"}


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def logged_in_client(env: WebEnv, username: str) -> TestClient:
    client = TestClient(env.client.app)
    page = client.get("/login")
    response = client.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": csrf_from(page.text), "next": "/studies"},
                           follow_redirects=False)
    assert response.status_code == 303
    return client


def test_session_cookie_is_httponly_and_samesite_lax(web_env: WebEnv) -> None:
    client = TestClient(web_env.client.app)
    page = client.get("/login")
    response = client.post("/login", data={"username": "clinician", "password": PASSWORD,
                                           "csrf_token": csrf_from(page.text)}, follow_redirects=False)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


def test_secure_flag_when_behind_tls(tmp_path) -> None:
    from tests.web.web_helpers import make_settings, register_test_model

    settings = make_settings(tmp_path, secure_cookies=True, workers=0)
    register_test_model(settings)
    add_user(settings, "ann", "viewer")
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        page = client.get("/login")
        response = client.post("/login", data={"username": "ann", "password": PASSWORD,
                                               "csrf_token": csrf_from(page.text)}, follow_redirects=False)
        assert "secure" in response.headers["set-cookie"].lower()


def test_login_without_csrf_token_is_refused(web_env: WebEnv) -> None:
    client = TestClient(web_env.client.app)
    client.get("/login")
    response = client.post("/login", data={"username": "clinician", "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/api/studies").status_code == 401  # no session was started


def test_wrong_password_stays_on_login_with_message(web_env: WebEnv) -> None:
    client = TestClient(web_env.client.app)
    page = client.get("/login")
    response = client.post("/login", data={"username": "clinician", "password": "nope nope nope",
                                           "csrf_token": csrf_from(page.text)})
    assert response.status_code == 401 and "wrong username or password" in response.text


def test_login_next_cannot_redirect_off_site(web_env: WebEnv) -> None:
    client = TestClient(web_env.client.app)
    page = client.get("/login")
    response = client.post("/login", data={"username": "viewer", "password": PASSWORD, "next": "//evil.example/x",
                                           "csrf_token": csrf_from(page.text)}, follow_redirects=False)
    assert response.headers["location"] == "/studies"
    for target in ("/\\evil.example/x", "https://evil.example/x", "studies"):
        page = client.get("/login")
        response = client.post("/login", data={"username": "viewer", "password": PASSWORD, "next": target,
                                               "csrf_token": csrf_from(page.text)}, follow_redirects=False)
        assert response.headers["location"] == "/studies", target
    expired = client.get("/login?expired=1&next=/upload")
    assert 'id="session-expired"' in expired.text and 'name="next" value="/upload"' in expired.text


def test_cookie_api_calls_that_change_state_need_the_csrf_header(web_env: WebEnv) -> None:
    client = logged_in_client(web_env, "clinician")
    response = client.post("/api/studies", files=[("files", ("a.nii.gz", b"x", "x"))])
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert client.get("/api/studies").status_code == 200  # reading needs no token


def test_anonymous_pages_redirect_to_login(web_env: WebEnv) -> None:
    for path in ("/studies", "/upload", "/evaluation", "/"):
        response = web_env.client.get(path, headers=HTML, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")


def test_viewer_gets_403_on_upload_and_evaluation_pages(web_env: WebEnv) -> None:
    client = logged_in_client(web_env, "viewer")
    for path in ("/upload", "/evaluation"):
        response = client.get(path, headers=HTML)
        assert response.status_code == 403 and "viewer" in response.text


def test_logout_ends_the_session(web_env: WebEnv) -> None:
    client = logged_in_client(web_env, "viewer")
    page = client.get("/studies")
    assert page.status_code == 200
    client.post("/logout", data={"csrf_token": csrf_from(page.text)})
    assert client.get("/api/studies").status_code == 401


def _upload_and_wait(env: WebEnv, token: str, parts: list) -> dict:
    response = env.client.post("/api/studies", files=parts, headers=bearer(token))
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = env.client.get(f"/api/jobs/{job_id}", headers=bearer(token)).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(job)


def test_result_list_evaluation_and_delete_pages(web_env: WebEnv, tmp_path) -> None:
    from tests.web.test_api_studies import phantom_nifti

    ct, truth = phantom_nifti(tmp_path)
    token = web_env.tokens["researcher"]
    jobs = [_upload_and_wait(web_env, token, [("files", (f"case{n}.nii.gz", ct, "x")), ("name", (None, f"case{n}")),
                                               ("truth", ("truth.nii.gz", truth, "x"))]) for n in range(2)]
    assert all(job["status"] == "done" for job in jobs)
    study_ids = [job["study_id"] for job in jobs]
    client = logged_in_client(web_env, "researcher")

    result = client.get(f"/studies/{study_ids[0]}")
    assert result.status_code == 200
    assert 'id="metric-dice"' in result.text and "niivue-0.69.0.min.js" in result.text

    listing = client.get("/studies", params={"q": "case1"})
    assert "case1" in listing.text and "case0" not in listing.text

    evaluation = client.get("/evaluation", params=[("id", study_ids[0]), ("id", study_ids[1])])
    assert evaluation.status_code == 200 and "bland-altman.png" in evaluation.text
    ids = ",".join(study_ids)
    data = client.get("/api/evaluation", params={"ids": ids}).json()
    assert len(data["cases"]) == 2 and data["bland_altman_volume_ml"]["n"] == 2
    csv_text = client.get("/api/evaluation.csv", params={"ids": ids}).text
    assert csv_text.splitlines()[0].startswith("study_id,name,site,model_version,run_id,quality,dice")
    assert len(csv_text.splitlines()) == 1 + 2 + 2  # header, cases, mean, sd
    for plot in ("bland-altman.png", "box-plot.png"):
        image = client.get(f"/api/evaluation/{plot}", params={"ids": ids})
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"

    overlay = client.get(f"/api/studies/{study_ids[0]}/overlay.png", params={"slice": 3})
    assert overlay.status_code == 200 and overlay.headers["x-slice"] == "3"
    assert client.get(f"/api/studies/{study_ids[0]}/overlay.png", params={"slice": 999}).status_code == 422

    page = client.get("/studies")
    deleted = client.post(f"/studies/{study_ids[0]}/delete", data={"csrf_token": csrf_from(page.text)},
                          follow_redirects=False)
    assert deleted.status_code == 303
    assert client.get(f"/api/studies/{study_ids[0]}").status_code == 404
    assert not (web_env.settings.studies_dir / study_ids[0]).exists()


def test_repeated_wrong_passwords_lock_the_username_for_a_while(web_env: WebEnv) -> None:
    add_user(web_env.settings, "mallory", "viewer")
    client = TestClient(web_env.client.app)
    token = csrf_from(client.get("/login").text)
    for _ in range(5):
        wrong = client.post("/login", data={"username": "mallory", "password": "guess guess", "csrf_token": token})
        assert wrong.status_code == 401
    right = client.post("/login", data={"username": "mallory", "password": PASSWORD, "csrf_token": token})
    assert right.status_code == 429 and "try again in" in right.text
    other = logged_in_client(web_env, "viewer")  # other users are not affected
    assert other.get("/api/studies").status_code == 200
