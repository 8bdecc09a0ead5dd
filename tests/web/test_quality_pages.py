"""The quality verdict where people read it: the study's JSON, the studies list (JSON and page)
and the result page's coloured badge with its reasons."""

from __future__ import annotations

from pathlib import Path

from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti, wait_for_job
from tests.web.test_sessions_and_pages import logged_in_client
from tests.web.web_helpers import bearer


def test_verdict_in_the_api_the_list_and_the_result_page(web_env: WebEnv, tmp_path: Path) -> None:
    token = web_env.tokens["clinician"]
    ct, _truth = phantom_nifti(tmp_path)
    response = web_env.client.post("/api/studies", files=[("files", ("phantom.nii.gz", ct, "application/gzip"))],
                                   headers=bearer(token))
    assert response.status_code == 202, response.text
    ids = response.json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    study = web_env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()
    quality = study["summary"]["quality"]
    assert quality["verdict"] in ("ok", "review", "not assessable")
    assert study["quality_verdict"] == quality["verdict"]
    listed = web_env.client.get("/api/studies", headers=bearer(token)).json()
    assert next(s for s in listed if s["id"] == ids["study_id"])["quality_verdict"] == quality["verdict"]

    client = logged_in_client(web_env, "clinician")
    page = client.get(f"/studies/{ids['study_id']}").text
    css = quality["verdict"].replace(" ", "-")
    assert f'data-verdict="{quality["verdict"]}"' in page and f"quality-{css}" in page
    for reason in quality["reasons"]:
        assert reason.replace("'", "&#39;") in page
    assert f'quality-badge quality-{css}">{quality["verdict"]}</span>' in client.get("/studies").text
