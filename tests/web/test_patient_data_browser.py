"""Patient data protected, against a real ``spineseg serve``: every file and folder it makes
under the data directory is private to its user, and the pages (the result page with the
NiiVue viewer above all) run under the Content-Security-Policy without one violation."""

from __future__ import annotations

import io
import stat
import time
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from tests.imaging.phi_series import write_phi_series
from tests.web.chromium import CHROMIUM
from tests.web.live_server import LiveServer
from tests.web.test_browser import log_in
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model

JOB_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, dict]]:
    """A live server with one finished DICOM study (uploaded through the API)."""
    data_dir = tmp_path_factory.mktemp("private-data")
    settings = make_settings(data_dir)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    live = LiveServer(data_dir)
    live.started_at = time.time()  # type: ignore[attr-defined]  # what is older the test wrote itself
    live.start()
    paths = write_phi_series(tmp_path_factory.mktemp("series"), count=12)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in paths:
            archive.write(path, path.name)
    response = httpx.post(f"{live.url}/api/studies", headers=bearer(token), timeout=60,
                          files=[("files", ("scan.zip", buffer.getvalue(), "application/zip"))])
    assert response.status_code == 202, response.text
    ids = response.json()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = httpx.get(f"{live.url}/api/jobs/{ids['job_id']}", headers=bearer(token)).json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.3)
    assert job["status"] == "done", job
    httpx.get(f"{live.url}/api/studies/{ids['study_id']}/seg.dcm", headers=bearer(token))  # made on demand
    yield live, token, ids
    live.stop()


def test_files_are_0600_and_folders_0700_under_the_data_directory(served: tuple[LiveServer, str, dict]) -> None:
    live, _token, ids = served
    study_dir = live.data_dir / "studies" / ids["study_id"]
    run_dir = study_dir / "runs" / ids["job_id"]
    assert (run_dir / "seg.dcm").is_file() and any((study_dir / "input").rglob("*.dcm"))
    made_by_tests = {live.data_dir / "untrained-model", live.log_path}  # written by the test, not the service
    loose = []
    for path in [live.data_dir, *live.data_dir.rglob("*")]:
        if any(path == m or m in path.parents for m in made_by_tests) or path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        top_level = path.parent == live.data_dir or path == live.data_dir
        if mode & 0o077 and (top_level or path.stat().st_ctime >= live.started_at):
            loose.append(f"{path.relative_to(live.data_dir)} {mode:o}")
    assert loose == [], loose
    assert stat.S_IMODE(live.data_dir.stat().st_mode) == 0o700
    for path in (study_dir, run_dir / "mask.nii.gz", run_dir / "seg.dcm",
                 next((study_dir / "input").rglob("*.dcm"))):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_pages_and_viewer_run_without_a_csp_violation(served: tuple[LiveServer, str, dict], browser) -> None:
    live, _token, ids = served
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if "Content Security Policy" in message.text or "Refused to" in message.text else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.add_init_script("""document.addEventListener("securitypolicyviolation", (event) => {
        (window.__csp = window.__csp || []).push(event.violatedDirective + " " + event.blockedURI);
    });""")
    log_in(page, live, "carla")
    page.wait_for_url("**/upload")
    seen = {"/upload": page.evaluate("window.__csp || []")}
    page.goto(f"{live.url}/studies/{ids['study_id']}")
    page.wait_for_selector("#result[data-viewer-ready=true]", timeout=60_000)
    page.click("[data-view=render]")
    page.wait_for_timeout(500)
    page.wait_for_function("() => document.getElementById('overlay').src.startsWith('blob:')")
    seen["result"] = page.evaluate("window.__csp || []")
    for path in ("/studies", f"/jobs/{ids['job_id']}", "/docs"):
        page.goto(live.url + path)
        page.wait_for_load_state("networkidle")
        seen[path] = page.evaluate("window.__csp || []")
    assert page.locator(".swagger-ui").count() == 1  # Swagger UI started under its hashed policy
    assert {where: found for where, found in seen.items() if found} == {}
    assert problems == []
    page.close()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_the_upload_form_names_the_study_and_never_after_the_file(served: tuple[LiveServer, str, dict], browser,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    live = served[0]
    paths = write_phi_series(tmp_path_factory.mktemp("named"), count=12)
    page = browser.new_page()
    log_in(page, live, "carla")
    page.wait_for_url("**/upload")
    page.set_input_files("#files", [str(p) for p in paths])
    page.fill("#study-name", "Lumbar follow-up")
    page.click("#upload-button")
    page.wait_for_url("**/jobs/*", timeout=60_000)
    page.goto(f"{live.url}/studies")
    assert "Lumbar follow-up" in page.inner_text("main")
    assert "DOE_JANE" not in page.content()
    page.close()
