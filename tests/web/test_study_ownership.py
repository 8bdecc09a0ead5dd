"""One rule for a study (issue 30.7b): every change to it is its owner's or an admin's. A
non-owner clinician once changed another user's study site and sent it to the PACS while
rename, delete and re-run were owner-only. Every route that changes a study or its job is in
``CHANGES`` (a new one that is not fails the first test), and each refuses another clinician
with 403 naming the rule, changing nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from spineseg.web.app import all_routers
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti, wait_for_job
from tests.web.web_helpers import add_user, bearer

# (method, path, JSON body): every route that changes a study or its job
CHANGES: list[tuple[str, str, dict | None]] = [
    ("PUT", "/api/studies/{study_id}/name", {"name": "taken over"}),
    ("PUT", "/api/studies/{study_id}/site", {"site": "Elsewhere"}),
    ("PUT", "/api/studies/{study_id}/current-run", {"run_id": None}),
    ("POST", "/api/studies/{study_id}/rerun", {}),
    ("POST", "/api/studies/{study_id}/pacs/send", None),
    ("POST", "/api/jobs/{job_id}/cancel", None),
    ("POST", "/jobs/{job_id}/cancel", None),
    ("POST", "/studies/{study_id}/delete", None),
    ("DELETE", "/api/studies/{study_id}", None),
]
# Routes that add to a study without changing what is there, open to every clinician who sees it:
# a correction is a second reader's new, attributed, audited truth version (issue 32: two readers
# editing one study keep both versions); the owner's name, site, runs and earlier versions stay.
ADDITIONS: set[tuple[str, str]] = {("POST", "/api/studies/{study_id}/corrections")}


def test_every_route_that_changes_a_study_is_listed() -> None:
    changing = {(method, route.path) for router in all_routers() for route in router.routes
                if isinstance(route, APIRoute) and re.search(r"\{(study|job)_id\}", route.path)
                for method in route.methods - {"GET", "HEAD"}}
    assert changing == {(method, path) for method, path, _body in CHANGES} | ADDITIONS


@pytest.fixture(scope="module")
def study(web_env: WebEnv, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished study of the clinician's, with the site 'Home'."""
    ct, _truth = phantom_nifti(tmp_path_factory.mktemp("ownership"))
    response = web_env.client.post("/api/studies", files=[("files", ("ct.nii.gz", ct, "application/gzip"))],
                                   data={"name": "mine", "site": "Home"}, headers=bearer(web_env.tokens["clinician"]))
    assert response.status_code == 202, response.text
    assert wait_for_job(web_env, response.json()["job_id"], web_env.tokens["clinician"])["status"] == "done"
    return response.json()


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
def test_another_clinician_changes_nothing(web_env: WebEnv, study: dict, tmp_path: Path, method: str, path: str,
                                           body: dict | None) -> None:
    other = add_user(web_env.settings, f"other-{CHANGES.index((method, path, body))}", "clinician")
    owner = bearer(web_env.tokens["clinician"])
    before = web_env.client.get(f"/api/studies/{study['study_id']}", headers=owner).json()
    url = path.format(study_id=study["study_id"], job_id=study["job_id"])
    response = web_env.client.request(method, url, json=body, headers=bearer(other) | {"Accept": "application/json"})
    assert response.status_code == 403, response.text
    assert "only the study's owner or an admin may" in response.text and "belongs to clinician" in response.text
    after = web_env.client.get(f"/api/studies/{study['study_id']}", headers=owner).json()
    assert (after["name"], after["site"], len(after["runs"])) == (before["name"], before["site"], len(before["runs"]))


def test_the_owner_and_an_admin_may_change_the_site(web_env: WebEnv, study: dict) -> None:
    url = f"/api/studies/{study['study_id']}/site"
    owner = web_env.client.put(url, json={"site": "Home B"}, headers=bearer(web_env.tokens["clinician"]))
    assert owner.status_code == 200 and owner.json()["site"] == "Home B", owner.text
    admin = web_env.client.put(url, json={"site": "Home"}, headers=bearer(web_env.tokens["admin"]))
    assert admin.status_code == 200 and admin.json()["site"] == "Home", admin.text
    # the PACS send passes the rule for the owner (then says why it cannot send: no PACS link)
    sent = web_env.client.post(f"/api/studies/{study['study_id']}/pacs/send",
                               headers=bearer(web_env.tokens["clinician"]))
    assert sent.status_code not in (403, 500), sent.text
