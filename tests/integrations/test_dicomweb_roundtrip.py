"""DICOMweb round trip against a real Orthanc: search (QIDO-RS), import (WADO-RS) into a
de-identified study through the upload path, segment with the shipped model on CPU, send the
SEG, the levels SEG and the measurement SR back (STOW-RS) and check through Orthanc's REST API
that they sit in the original study and reference the original series (the SR read back value
by value). Then the failures: not CT, wrong credentials, PACS down."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from spineseg.store.database import open_database
from spineseg.store.pacs_links import PacsLink
from spineseg.web.app import create_app
from tests.conftest import CASES
from tests.integrations.orthanc import PASSWORD, USERNAME, Orthanc, orthanc_available
from tests.integrations.sent_results import SPINE_SEG, check_sent_report, sends_the_report, sent_results
from tests.integrations.thorax import ACCESSION, PATIENT_ID, PATIENT_NAME, SERIES_UID, STUDY_UID, pacs_copy
from tests.services.report_case import make_report_case
from tests.web.web_helpers import add_user, bearer, make_settings

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
JOB_TIMEOUT_S = 300
MR_SERIES_UID = "1.2.826.0.1.3680043.10.1016.1.9"


@dataclass
class Env:
    orthanc: Orthanc
    client: TestClient
    token: str
    data_dir: Path
    endpoints_file: Path
    before: dict[str, int]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    why = orthanc_available()
    if why:
        pytest.skip(why)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cases"
    if not (shared / "ts-dicom-thorax" / "dicom").is_dir():
        pytest.skip(f"{shared} is absent")
    root = tmp_path_factory.mktemp("dicomweb")
    orthanc = Orthanc(root / "orthanc").start()
    try:
        orthanc.upload_folder(pacs_copy(shared, root / "ct")[0].parent)
        mr = pacs_copy(shared, root / "mr", modality="MR", series_uid=MR_SERIES_UID, limit=2)
        orthanc.upload_folder(mr[0].parent)
        before = orthanc.count()
        endpoints = root / "pacs.json"
        endpoints.write_text(json.dumps([
            {"name": "orthanc", "url": orthanc.dicomweb_url, "username": USERNAME, "password": PASSWORD,
             "timeout_s": 20},
            {"name": "wrong-password", "url": orthanc.dicomweb_url, "username": USERNAME, "password": "nope"},
            {"name": "down", "url": "http://127.0.0.1:9/dicom-web", "timeout_s": 3},
        ]))
        settings = make_settings(root / "data", pacs_endpoints_file=endpoints)
        token = add_user(settings, "clin", "clinician")
        with TestClient(create_app(settings)) as client:
            yield Env(orthanc, client, token, settings.data_dir, endpoints, before)
    finally:
        orthanc.stop()


def _wait_done(client: TestClient, token: str, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=bearer(token)).json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")


def _study_files(data_dir: Path, study_id: str) -> list[Path]:
    return sorted((data_dir / "studies" / study_id / "input" / "series").glob("*.dcm"))


def test_search_import_segment_send_back(env: Env) -> None:
    headers = bearer(env.token)
    found = env.client.get("/api/pacs/orthanc/series", headers=headers,
                           params={"patient_id": PATIENT_ID, "modality": "CT", "date": "2022-12-08"})
    assert found.status_code == 200, found.text
    rows = found.json()
    assert [(r["series_uid"], r["instances"], r["accession_number"]) for r in rows] == [(SERIES_UID, 20, ACCESSION)]
    by_accession = env.client.get("/api/pacs/orthanc/series", headers=headers,
                                  params={"accession_number": ACCESSION}).json()
    assert sorted(r["modality"] for r in by_accession) == ["CT", "MR"]

    started = time.monotonic()
    imported = env.client.post("/api/pacs/orthanc/import", headers=headers,
                               json={"study_uid": STUDY_UID, "series_uid": SERIES_UID})
    assert imported.status_code == 202, imported.text
    study_id, job_id = imported.json()["study_id"], imported.json()["job_id"]
    job = _wait_done(env.client, env.token, job_id)
    assert job["status"] == "done", job
    segmented_s = time.monotonic() - started

    # stored de-identified: no original identifier or UID in the study's files
    stored = _study_files(env.data_dir, study_id)
    assert len(stored) == 20
    for path in stored:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientID != PATIENT_ID and str(ds.PatientName) != PATIENT_NAME
        assert ds.StudyInstanceUID != STUDY_UID and ds.SeriesInstanceUID != SERIES_UID
        assert ds.PatientIdentityRemoved == "YES"
    study = env.client.get(f"/api/studies/{study_id}", headers=headers).json()
    assert STUDY_UID not in json.dumps(study) and PATIENT_ID not in json.dumps(study)
    # the private link holds the originals
    database = open_database(f"sqlite:///{env.data_dir / 'spineseg.db'}")
    with database.session() as session:
        link = session.get(PacsLink, study_id)
        assert (link.origin, link.endpoint, link.study_uid, link.series_uid) == (
            "dicomweb", "orthanc", STUDY_UID, SERIES_UID)
        assert len(link.uid_map) == 20 + 3  # 20 SOP instances, study, series, frame of reference
    database.dispose()

    sent = env.client.post(f"/api/studies/{study_id}/pacs/send", headers=headers)
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["stored"] == len(body["modalities"]) and sends_the_report(body["modalities"])
    assert body["run_id"] == job_id
    after = env.orthanc.count()
    print(f"\nOrthanc before: {env.before}\nOrthanc after:  {after}\n"
          f"import + segment {segmented_s:.1f} s; SEG series {body['series_uids'][0]}")
    assert after["CountInstances"] == env.before["CountInstances"] + body["stored"]
    assert after["CountSeries"] == env.before["CountSeries"] + body["stored"]
    assert after["CountStudies"] == env.before["CountStudies"]  # filed in the original study
    assert after["CountPatients"] == env.before["CountPatients"]

    with env.orthanc.client() as orthanc:
        studies = orthanc.post("/tools/find", json={"Level": "Study", "Query": {"StudyInstanceUID": STUDY_UID},
                                                    "Expand": True}).json()
        assert len(studies) == 1
        series = [orthanc.get(f"/series/{s}").json() for s in studies[0]["Series"]]
        assert sorted(s["MainDicomTags"].get("Modality") for s in series) == sorted(["CT", "MR", *body["modalities"]])
        sent = sent_results(orthanc)
    seg_ds = sent[SPINE_SEG]
    compared = check_sent_report(sent, study["summary"], study["model_id"])
    print(f"measurement SR read back from Orthanc: {len(study['summary']['vertebrae'])} vertebra(e), {compared} "
          "numbers equal to the run's summary")
    assert seg_ds.PatientID == PATIENT_ID and str(seg_ds.PatientName) == PATIENT_NAME
    assert seg_ds.StudyInstanceUID == STUDY_UID
    assert seg_ds.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
    instances = seg_ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = {item.ReferencedSOPInstanceUID for item in instances}
    assert referenced == {f"{SERIES_UID}.{i}" for i in range(1, 21)}
    assert seg_ds.FrameOfReferenceUID == "1.2.826.0.1.3680043.10.1016.1.2"
    assert "PatientIdentityRemoved" not in seg_ds

    audit = env.client.get("/api/pacs/orthanc/series", headers=headers)  # one more audited search
    assert audit.status_code == 200
    again = env.client.get(f"/api/studies/{study_id}/pacs", headers=headers).json()
    assert again == {"linked": True, "origin": "dicomweb", "endpoint": "orthanc", "sent_run_id": job_id,
                     "send_error": None}


def _no_new_study(env: Env, before: set[str]) -> None:
    assert set(p.name for p in (env.data_dir / "studies").iterdir()) == before


def test_a_series_that_is_not_ct_is_refused(env: Env) -> None:
    before = {p.name for p in (env.data_dir / "studies").iterdir()} if (env.data_dir / "studies").is_dir() else set()
    answer = env.client.post("/api/pacs/orthanc/import", headers=bearer(env.token),
                             json={"study_uid": STUDY_UID, "series_uid": MR_SERIES_UID})
    assert answer.status_code == 422, answer.text
    print(f"\nnot CT: {answer.status_code} {answer.json()['detail']}")
    assert answer.json()["detail"] == (f"series_uid: series {MR_SERIES_UID} is MR, not CT: SpineSeg segments CT "
                                       "only, so it was not imported")
    if before:
        _no_new_study(env, before)


def test_wrong_credentials_and_pacs_down_say_so(env: Env) -> None:
    headers = bearer(env.token)
    wrong = env.client.get("/api/pacs/wrong-password/series", headers=headers)
    assert wrong.status_code == 502
    assert "refused our credentials while searching for series (HTTP 401)" in wrong.json()["detail"]
    down = env.client.post("/api/pacs/down/import", headers=headers,
                           json={"study_uid": STUDY_UID, "series_uid": SERIES_UID})
    assert down.status_code == 502
    assert "could not be reached" in down.json()["detail"]
    unknown = env.client.get("/api/pacs/nowhere/series", headers=headers)
    assert unknown.status_code == 422 and "no PACS endpoint named 'nowhere'" in unknown.json()["detail"]
    bad_uid = env.client.post("/api/pacs/orthanc/import", headers=headers,
                              json={"study_uid": "x; drop", "series_uid": SERIES_UID})
    assert bad_uid.status_code == 422 and "is not a DICOM UID" in bad_uid.json()["detail"]
    print(f"\nwrong credentials: 502 {wrong.json()['detail']}\nPACS down: 502 {down.json()['detail']}")


def test_a_study_with_many_vertebrae_sends_every_measurement(env: Env, tmp_path: Path) -> None:
    """P5's lower thorax (7 vertebrae: graded, cut, withheld, the L1 density flag) from the PACS
    and back: the SR that Orthanc holds carries every value of the run, under the original
    patient and UIDs."""
    case = make_report_case(CASES, tmp_path)  # written with its own patient and UIDs
    env.orthanc.upload_folder(case.folder)
    headers = bearer(env.token)
    first = pydicom.dcmread(next(case.folder.iterdir()), stop_before_pixels=True)
    imported = env.client.post("/api/pacs/orthanc/import", headers=headers,
                               json={"study_uid": first.StudyInstanceUID, "series_uid": first.SeriesInstanceUID})
    assert imported.status_code == 202, imported.text
    assert _wait_done(env.client, env.token, imported.json()["job_id"])["status"] == "done"
    study = env.client.get(f"/api/studies/{imported.json()['study_id']}", headers=headers).json()
    sent = env.client.post(f"/api/studies/{study['id']}/pacs/send", headers=headers)
    assert sent.status_code == 200 and sends_the_report(sent.json()["modalities"]), sent.text
    with env.orthanc.client() as orthanc:
        held = sent_results(orthanc, first.StudyInstanceUID)
    originals = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in case.folder.iterdir()}
    compared = check_sent_report(held, study["summary"], study["model_id"], study_uid=first.StudyInstanceUID,
                                 patient_id=first.PatientID, originals=originals)
    names = [v["name"] for v in study["summary"]["vertebrae"]]
    print(f"\nmeasurement SR of {len(names)} vertebrae ({', '.join(names)}) read back from Orthanc: {compared} "
          "numbers equal to the run's summary")
    assert compared >= len(names)
