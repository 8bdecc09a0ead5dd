"""Jobs through the API with no worker running: they stay queued, report their queue
position, and can be cancelled; the study list filters by status. Plus 503 without a model."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
from fastapi.testclient import TestClient

from spineseg.web.app import create_app
from tests.conftest import make_phantom
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model


def _ct_bytes(tmp_path: Path) -> bytes:
    volume, _mask = make_phantom()
    nib.save(nib.Nifti1Image(volume.array, volume.affine), str(tmp_path / "ct.nii.gz"))
    return (tmp_path / "ct.nii.gz").read_bytes()


def test_queued_jobs_report_position_and_cancel(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    viewer = add_user(settings, "victor", "viewer")
    ct = _ct_bytes(tmp_path)
    with TestClient(create_app(settings)) as client:
        ids = [client.post("/api/studies", files=[("files", (f"ct{n}.nii.gz", ct, "x"))],
                           headers=bearer(token)).json() for n in range(2)]
        second = client.get(f"/api/jobs/{ids[1]['job_id']}", headers=bearer(token)).json()
        assert second["status"] == "queued" and second["queue_position"] == 2

        assert client.post(f"/api/jobs/{ids[0]['job_id']}/cancel", headers=bearer(viewer)).status_code == 403
        cancelled = client.post(f"/api/jobs/{ids[0]['job_id']}/cancel", headers=bearer(token)).json()
        assert cancelled["status"] == "cancelled"
        second = client.get(f"/api/jobs/{ids[1]['job_id']}", headers=bearer(token)).json()
        assert second["queue_position"] == 1

        listed = client.get("/api/studies", params={"status": "cancelled"}, headers=bearer(token)).json()
        assert [s["id"] for s in listed] == [ids[0]["study_id"]]
        missing = client.get(f"/api/studies/{ids[1]['study_id']}/mask.nii.gz", headers=bearer(token))
        assert missing.status_code == 404 and "queued" in missing.json()["detail"]

        assert client.delete(f"/api/studies/{ids[1]['study_id']}", headers=bearer(viewer)).status_code == 403
        assert client.delete(f"/api/studies/{ids[1]['study_id']}", headers=bearer(token)).status_code == 200
        assert client.get(f"/api/jobs/{ids[1]['job_id']}", headers=bearer(token)).status_code == 404


def test_upload_without_a_production_model_is_503_with_the_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", workers=0)
    token = add_user(settings, "carla", "clinician")
    register_test_model(settings, make_production=False)  # a registry with versions but no production
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/health").json()["production_model"] is None
        response = client.post("/api/studies", files=[("files", ("ct.nii.gz", _ct_bytes(tmp_path), "x"))],
                               headers=bearer(token))
        assert response.status_code == 503
        assert "no trained model" in response.json()["detail"]


def test_job_events_stream_ends_with_the_final_status(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", workers=0)
    register_test_model(settings)
    token = add_user(settings, "carla", "clinician")
    with TestClient(create_app(settings)) as client:
        ids = client.post("/api/studies", files=[("files", ("ct.nii.gz", _ct_bytes(tmp_path), "x"))],
                          headers=bearer(token)).json()
        client.post(f"/api/jobs/{ids['job_id']}/cancel", headers=bearer(token))
        with client.stream("GET", f"/api/jobs/{ids['job_id']}/events", headers=bearer(token)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert len(events) == 1 and '"status": "cancelled"' in events[0]
        assert client.get("/api/jobs/nope/events", headers=bearer(token)).status_code == 404
        assert client.get(f"/api/jobs/{ids['job_id']}/events").status_code == 401
