"""Patient data protected (issue 9), on the real app: uploads are de-identified before they are
stored, no output carries an identifier, studies are not named after files, pages are not
cached and carry a Content-Security-Policy, and only a study's owner or an admin changes it."""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from spineseg.config import Settings
from spineseg.web.app import create_app
from tests.imaging.phi_series import FILE_NAME, PHI, leaks, write_phi_series
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import wait_for_job
from tests.web.test_sessions_and_pages import logged_in_client
from tests.web.web_helpers import add_user, bearer, make_settings, register_test_model


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    settings = make_settings(tmp_path_factory.mktemp("phi-data"), max_upload_bytes=64 * 2**20)
    register_test_model(settings)
    tokens = {name: add_user(settings, name, role) for name, role in (
        ("viewer", "viewer"), ("clinician", "clinician"), ("other", "clinician"), ("admin", "admin"))}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


def phi_zip(tmp_path: Path, **kwargs: object) -> bytes:
    paths = write_phi_series(tmp_path / "series", **kwargs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in paths:
            archive.write(path, f"{FILE_NAME}/{path.name}")
    return buffer.getvalue()


def upload(env: WebEnv, token: str, parts: list, **fields: str) -> dict:
    response = env.client.post("/api/studies", files=parts + [(k, (None, v)) for k, v in fields.items()],
                               headers=bearer(token))
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture(scope="module")
def phi_study(env: WebEnv, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished study of the synthetic series, uploaded as ``DOE_JANE_MRN-998877.zip``."""
    data = phi_zip(tmp_path_factory.mktemp("phi-series"))
    ids = upload(env, env.tokens["clinician"], [("files", (f"{FILE_NAME}.zip", data, "application/zip"))])
    assert wait_for_job(env, ids["job_id"], env.tokens["clinician"])["status"] == "done"
    return ids


def test_no_output_of_a_study_carries_an_identifier(env: WebEnv, phi_study: dict) -> None:
    study_id, token = phi_study["study_id"], env.tokens["clinician"]
    searched: dict[str, bytes] = {}
    # every file stored for the study: de-identified inputs and all outputs
    study_dir = env.settings.studies_dir / study_id
    for path in sorted(p for p in study_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        searched[f"stored {path.relative_to(study_dir)}"] = gzip.decompress(data) if path.suffix == ".gz" else data
        assert leaks(path.relative_to(study_dir).as_posix().encode()) == [], path
    stored = [p for p in (study_dir / "input").rglob("*.dcm")]
    assert len(stored) == 12
    # every download, the study JSON and the pages every role sees
    study = env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()
    for name, url in study["downloads"].items():
        if url:
            response = env.client.get(url, headers=bearer(token))
            assert response.status_code == 200, (name, response.text)
            body = gzip.decompress(response.content) if url.endswith(".gz") else response.content
            searched[f"download {name}"] = body + json.dumps(dict(response.headers)).encode()
            if name == "overlays":
                with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                    for member in archive.namelist():
                        searched[f"overlay {member}"] = member.encode() + archive.read(member)
    searched["overlay.png"] = env.client.get(f"/api/studies/{study_id}/overlay.png", headers=bearer(token)).content
    searched["study JSON"] = json.dumps(study).encode()
    searched["study list JSON"] = env.client.get("/api/studies", headers=bearer(token)).content
    searched["job JSON"] = env.client.get(f"/api/jobs/{phi_study['job_id']}", headers=bearer(token)).content
    for role in ("viewer", "clinician", "admin"):
        client = logged_in_client(env, role)
        for page in ("/studies", f"/studies/{study_id}", f"/jobs/{phi_study['job_id']}"):
            searched[f"{role} page {page}"] = client.get(page).content
    # the database (study rows, audit trail) holds no identifier either
    for path in env.settings.data_dir.glob("spineseg.db*"):
        searched[f"database {path.name}"] = path.read_bytes()
    assert len(searched) >= 30
    found = {where: leaks(data) for where, data in searched.items() if leaks(data)}
    assert found == {}, found


def test_stored_series_and_seg_are_deidentified_and_still_reference_each_other(env: WebEnv, phi_study: dict) -> None:
    study_id, token = phi_study["study_id"], env.tokens["clinician"]
    stored = [pydicom.dcmread(p) for p in sorted((env.settings.studies_dir / study_id / "input").rglob("*.dcm"))]
    pseudonym = env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).json()["patient_pseudonym"]
    assert re.fullmatch(r"SPS-[0-9A-F]{16}", pseudonym)
    for ds in stored:
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == pseudonym
        assert {item.CodeValue for item in ds.DeidentificationMethodCodeSequence} == {"113100", "113107"}
        assert not any(element.tag.is_private for element in ds.iterall())
    assert len({ds.SeriesInstanceUID for ds in stored}) == 1 and len({ds.SOPInstanceUID for ds in stored}) == 12
    assert stored[0].SeriesInstanceUID != PHI["series_uid"]
    seg = pydicom.dcmread(io.BytesIO(env.client.get(f"/api/studies/{study_id}/seg.dcm", headers=bearer(token)).content))
    assert seg.PatientID == pseudonym and seg.PatientBirthDate == "" and seg.AccessionNumber == ""
    assert seg.StudyInstanceUID == stored[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == stored[0].FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == stored[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in stored}


def test_study_name_is_never_the_file_name(env: WebEnv, phi_study: dict, tmp_path: Path) -> None:
    token = env.tokens["clinician"]
    study = env.client.get(f"/api/studies/{phi_study['study_id']}", headers=bearer(token)).json()
    # the default name: short id, modality, body part and the de-identified (shifted) study date
    assert re.fullmatch(rf"Study {study['id'][:8]} CT CHEST \d{{4}}-\d{{2}}-\d{{2}}", study["name"]), study["name"]
    assert PHI["study_date"] not in study["name"].replace("-", "")
    named = upload(env, token, [("files", (f"{FILE_NAME}.zip", phi_zip(tmp_path), "x"))], name="Follow-up spine")
    assert env.client.get(f"/api/studies/{named['study_id']}", headers=bearer(token)).json()["name"] == \
        "Follow-up spine"
    renamed = env.client.put(f"/api/studies/{named['study_id']}/name", json={"name": "  Second   look "},
                             headers=bearer(token))
    assert renamed.status_code == 200 and renamed.json()["name"] == "Second look"
    refused = env.client.put(f"/api/studies/{named['study_id']}/name", json={"name": "x" * 101},
                             headers=bearer(token))
    assert refused.status_code == 422 and "100" in refused.json()["detail"]
    wait_for_job(env, named["job_id"], token)


def test_one_patient_keeps_one_pseudonym_and_another_gets_another(env: WebEnv, phi_study: dict,
                                                                  tmp_path: Path) -> None:
    token = env.tokens["clinician"]
    first = env.client.get(f"/api/studies/{phi_study['study_id']}", headers=bearer(token)).json()
    again = upload(env, token, [("files", ("again.zip", phi_zip(tmp_path / "a"), "x"))])
    other = upload(env, token, [("files", ("other.zip", phi_zip(tmp_path / "b", patient={"mrn": "MRN-1"}), "x"))])
    pseudonyms = [env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()["patient_pseudonym"]
                  for ids in (again, other)]
    assert pseudonyms[0] == first["patient_pseudonym"] != pseudonyms[1]
    for ids in (again, other):
        wait_for_job(env, ids["job_id"], token)


def test_burned_in_annotation_is_refused_naming_the_file(env: WebEnv, tmp_path: Path) -> None:
    before = set(env.settings.studies_dir.iterdir())
    data = phi_zip(tmp_path, burned_in="YES")
    response = env.client.post("/api/studies", files=[("files", ("scan.zip", data, "x"))],
                               headers=bearer(env.tokens["clinician"]))
    assert response.status_code == 422, response.text
    body = response.json()
    assert "Burned In Annotation" in body["detail"] and f"{FILE_NAME}_000.dcm" in body["detail"]
    assert str(env.settings.data_dir) not in body["detail"]
    assert set(env.settings.studies_dir.iterdir()) == before  # nothing kept


def test_nifti_header_text_is_cleared_in_the_stored_copy(env: WebEnv, tmp_path: Path) -> None:
    volume = np.full((32, 32, 16), -800, dtype=np.int16)
    volume[10:20, 10:20, :] = 700
    image = nib.Nifti1Image(volume, np.diag([1.5, 1.5, 2.5, 1.0]))
    image.header["descrip"], image.header["aux_file"] = f"{PHI['name']} {PHI['mrn']}".encode(), PHI["mrn"].encode()
    image.header["intent_name"] = b"DOE"
    nib.save(image, tmp_path / "scan.nii.gz")
    token = env.tokens["clinician"]
    ids = upload(env, token, [("files", (f"{FILE_NAME}.nii.gz", (tmp_path / "scan.nii.gz").read_bytes(), "x"))])
    stored = list((env.settings.studies_dir / ids["study_id"] / "input").iterdir())
    assert [p.name for p in stored] == ["ct.nii.gz"]
    header = nib.load(stored[0]).header
    assert (header["descrip"].item(), header["aux_file"].item(), header["intent_name"].item()) == (b"", b"", b"")
    assert leaks(gzip.decompress(stored[0].read_bytes())) == []
    assert wait_for_job(env, ids["job_id"], token)["status"] == "done"
    summary = env.client.get(f"/api/studies/{ids['study_id']}/summary.json", headers=bearer(token)).content
    assert leaks(summary) == []


def test_pages_are_not_cached_and_carry_a_content_security_policy(env: WebEnv, phi_study: dict) -> None:
    client = logged_in_client(env, "viewer")
    for path in ("/studies", f"/studies/{phi_study['study_id']}", "/login", "/docs"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-store", path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "object-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    docs = client.get("/docs")
    assert "'sha256-" in docs.headers["content-security-policy"]  # Swagger UI's own inline start-up only
    static = client.get("/static/app.css")
    assert "cache-control" not in static.headers  # static assets hold no patient data


def test_only_the_owner_or_an_admin_deletes_cancels_or_reruns(env: WebEnv, tmp_path: Path) -> None:
    owner, other, admin, viewer = (env.tokens[n] for n in ("clinician", "other", "admin", "viewer"))
    ids = upload(env, owner, [("files", ("scan.zip", phi_zip(tmp_path), "x"))])
    study_id, job_id = ids["study_id"], ids["job_id"]
    # viewing stays open
    for token in (other, viewer):
        assert env.client.get(f"/api/studies/{study_id}", headers=bearer(token)).status_code == 200
    # another clinician may not change it, through the API or the pages
    refusals = [
        env.client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(other)),
        env.client.delete(f"/api/studies/{study_id}", headers=bearer(other)),
        env.client.post(f"/jobs/{job_id}/cancel", headers=bearer(other), follow_redirects=False),
        env.client.post(f"/studies/{study_id}/delete", headers=bearer(other), follow_redirects=False),
        env.client.put(f"/api/studies/{study_id}/name", json={"name": "mine"}, headers=bearer(other)),
    ]
    for response in refusals:
        assert response.status_code == 403, response.text
        assert "only the study's owner or an admin" in response.text and "belongs to clinician" in response.text
    assert wait_for_job(env, job_id, owner)["status"] == "done"
    rerun = env.client.post(f"/api/studies/{study_id}/rerun", json={}, headers=bearer(other))
    assert rerun.status_code == 403 and "re-run" in rerun.json()["detail"]
    # the owner re-runs, an admin cancels that run and deletes the study
    again = env.client.post(f"/api/studies/{study_id}/rerun", json={}, headers=bearer(owner))
    assert again.status_code == 202, again.text
    assert env.client.post(f"/api/jobs/{again.json()['job_id']}/cancel", headers=bearer(admin)).status_code == 200
    assert env.client.delete(f"/api/studies/{study_id}", headers=bearer(admin)).status_code == 200
    assert env.client.get(f"/api/studies/{study_id}", headers=bearer(owner)).status_code == 404


def test_a_real_series_rewritten_with_phi_is_stored_and_segmented_without_it(env: WebEnv, shared_cases: Path,
                                                                            tmp_path: Path) -> None:
    """Copies of ts-dicom-thorax (JPEG 2000, Siemens private tags) given made-up PHI."""
    from tests.imaging.phi_series import SOP_UID_ROOT

    parts = []
    for index, path in enumerate(sorted((shared_cases / "ts-dicom-thorax" / "dicom").iterdir())):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = PHI["name"], PHI["mrn"], PHI["birth_date"]
        ds.InstitutionName, ds.InstitutionAddress = PHI["institution"], PHI["address"]
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.OtherPatientIDs = (
            PHI["accession"], PHI["referring"], PHI["other_id"])
        ds.StudyDate, ds.StudyDescription = PHI["study_date"], PHI["study_description"]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = PHI["study_uid"], PHI["series_uid"]
        ds.FrameOfReferenceUID = PHI["frame_uid"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID_ROOT + str(index)
        ds.add_new(0x00091001, "LO", PHI["private"])
        target = tmp_path / f"{FILE_NAME}_{index:02d}.dcm"
        ds.save_as(target)
        parts.append(("files", (f"{FILE_NAME}/{target.name}", target.read_bytes(), "application/dicom")))
    token = env.tokens["clinician"]
    ids = upload(env, token, parts)
    assert wait_for_job(env, ids["job_id"], token)["status"] == "done"
    stored = sorted((env.settings.studies_dir / ids["study_id"] / "input").rglob("*"))
    assert len([p for p in stored if p.is_file()]) == 20
    seg = env.client.get(f"/api/studies/{ids['study_id']}/seg.dcm", headers=bearer(token))
    assert seg.status_code == 200, seg.text
    found = {str(p.name): leaks(p.read_bytes()) for p in stored if p.is_file() and leaks(p.read_bytes())}
    assert found == {} and leaks(seg.content) == []
    assert leaks(env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).content) == []
    ct = pydicom.dcmread(next(p for p in stored if p.is_file()))
    assert ct.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless  # pixels untouched, still compressed


def test_the_pseudonym_key_follows_the_server_secret(tmp_path: Path) -> None:
    from spineseg.services.deidentification import deidentification_key

    one = make_settings(tmp_path / "a")
    other = Settings(data_dir=tmp_path / "b", secret_key="Zx9-Lm2_Qw7Er4Ty1Ui8Op3As6Df5Gh0Jk", device="cpu")
    assert deidentification_key(one) == deidentification_key(make_settings(tmp_path / "c"))
    assert deidentification_key(one) != deidentification_key(other)
    assert one.session_secret().encode() not in deidentification_key(one)
