"""Issue 31 through the web app: an upload's intake stages (read, truth, de-identify, store) and the
job's stages reach the run summary in the API, and the result page shows where the time went;
while exports are still being made, the page says which."""

from __future__ import annotations

import json
import time
from pathlib import Path

from spineseg.store.database import open_database
from spineseg.store.models import Job
from spineseg.store.studies import get_study
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import phantom_nifti, wait_for_job
from tests.web.test_sessions_and_pages import logged_in_client
from tests.web.web_helpers import bearer


def _wait_exports(web_env: WebEnv, study_id: str, token: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        summary = web_env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()["summary"]
        if not summary["outputs_pending"]:
            return summary
        time.sleep(0.2)
    raise AssertionError(f"exports still pending: {summary['outputs_pending']}")


def test_stage_times_reach_the_summary_and_the_result_page(web_env: WebEnv, tmp_path: Path) -> None:
    token = web_env.tokens["clinician"]
    ct, truth = phantom_nifti(tmp_path)
    response = web_env.client.post("/api/studies", files=[("files", ("phantom.nii.gz", ct, "application/gzip")),
                                                          ("truth", ("truth.nii.gz", truth, "application/gzip"))],
                                   headers=bearer(token))
    assert response.status_code == 202, response.text
    ids = response.json()
    assert wait_for_job(web_env, ids["job_id"], token)["status"] == "done"
    summary = _wait_exports(web_env, ids["study_id"], token)
    times = summary["stage_times_s"]
    assert list(times)[:4] == ["read", "read_truth", "deidentify", "store"]
    assert {"segment", "load_truth", "score_overlap", "score_surface", "viewer_copies", "overlays"} <= set(times)
    downloaded = web_env.client.get(f"/api/studies/{ids['study_id']}/summary.json", headers=bearer(token))
    assert json.loads(downloaded.content)["stage_times_s"] == times

    client = logged_in_client(web_env, "clinician")
    page = client.get(f"/studies/{ids['study_id']}").text
    assert 'id="stage-times"' in page and 'data-stage="segment"' in page
    assert 'id="outputs-pending"' not in page  # all made

    # a run whose exports are still coming says which (the summary the job records first)
    pending = summary | {"outputs_pending": ["stl", "seg"]}
    database = open_database(web_env.settings.sqlalchemy_url)
    with database.session() as session:
        study = get_study(session, study_id=ids["study_id"])
        study.summary = session.get(Job, ids["job_id"]).summary = pending
    database.dispose()
    page = client.get(f"/studies/{ids['study_id']}").text
    assert 'id="outputs-pending"' in page and "surface mesh (STL), DICOM SEG" in page
