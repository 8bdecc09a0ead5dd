"""Issue 28 item 2: the SEG and RTSTRUCT of a browser/API upload fit the original series.

A real DICOM series (gstt-covid-chest) is uploaded, de-identified and segmented by the shipped
model. Its stored outputs reference the replaced UIDs (loading onto nothing outside SpineSeg);
``?identity=original`` gives a clinician or admin the same objects with the original UIDs and
patient attributes, which highdicom / pydicom then load onto the uploaded files by UID. Viewers
and researchers are refused with the reason, and each original download is audited."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from spineseg.store.accounts import recent_events
from spineseg.store.database import open_database
from spineseg.web.app import create_app
from tests.conftest import CASES
from tests.web.conftest import WebEnv
from tests.web.test_api_studies import dicom_parts, wait_for_job
from tests.web.test_sessions_and_pages import logged_in_client
from tests.web.web_helpers import add_user, bearer, make_settings

ROLES = ("viewer", "clinician", "researcher", "admin")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    """The real app on an empty registry: the shipped default model segments (so levels exist)."""
    settings = make_settings(tmp_path_factory.mktemp("original-series"), max_upload_bytes=64 * 2**20)
    tokens = {role: add_user(settings, role, role) for role in ROLES}
    with TestClient(create_app(settings)) as client:
        yield WebEnv(settings, client, tokens)


@pytest.fixture(scope="module")
def originals() -> dict[str, pydicom.Dataset]:
    """The uploaded files' headers by their original SOP Instance UID."""
    if not CASES.is_dir():
        pytest.skip(f"shared data not found at {CASES} (set SPINESEG_SHARED_DATA)")
    found = {}
    for path in sorted((CASES / "gstt-covid-chest" / "dicom").iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found[str(ds.SOPInstanceUID)] = ds
    return found


@pytest.fixture(scope="module")
def study(env: WebEnv, originals: dict) -> dict:
    token = env.tokens["clinician"]
    response = env.client.post("/api/studies", files=dicom_parts(CASES / "gstt-covid-chest" / "dicom"),
                               headers=bearer(token))
    assert response.status_code == 202, response.text
    ids = response.json()
    assert wait_for_job(env, ids["job_id"], token)["status"] == "done"
    return env.client.get(f"/api/studies/{ids['study_id']}", headers=bearer(token)).json()


def _get(env: WebEnv, url: str, role: str) -> pydicom.Dataset:
    response = env.client.get(url, headers=bearer(env.tokens[role]))
    assert response.status_code == 200, response.text
    return pydicom.dcmread(io.BytesIO(response.content))


def test_seg_for_the_original_series_loads_onto_the_uploaded_files(env: WebEnv, originals: dict,
                                                                    study: dict) -> None:
    first = next(iter(originals.values()))
    url = study["downloads"]["seg"]
    stored = _get(env, url, "clinician")  # what every download was before: pseudonymised UIDs
    assert stored.StudyInstanceUID != first.StudyInstanceUID
    referenced = stored.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert not {str(i.ReferencedSOPInstanceUID) for i in referenced} & set(originals)

    for role in ("clinician", "admin"):
        seg = hd.seg.Segmentation.from_dataset(_get(env, url + "?identity=original", role))
        assert seg.StudyInstanceUID == first.StudyInstanceUID
        assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
        assert seg.PatientID == first.PatientID and str(seg.PatientName) == str(first.PatientName)
        assert "PatientIdentityRemoved" not in seg
        sources = seg.get_source_image_uids()  # (study, series, instance) of every frame's source
        assert len(sources) == len(originals)
        for study_uid, series_uid, sop_uid in sources:
            assert (study_uid, series_uid) == (first.StudyInstanceUID, first.SeriesInstanceUID)
            assert sop_uid in originals
        # each frame sits where its source image lies, so a viewer stacks it on that image
        for frame, functional in zip(range(seg.NumberOfFrames), seg.PerFrameFunctionalGroupsSequence, strict=True):
            source = functional.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            position = functional.PlanePositionSequence[0].ImagePositionPatient
            assert np.allclose([float(v) for v in position],
                               [float(v) for v in originals[source].ImagePositionPatient]), frame
    assert seg.get_segment_numbers() == [1]


def test_rtstruct_and_levels_seg_for_the_original_series(env: WebEnv, originals: dict, study: dict) -> None:
    first = next(iter(originals.values()))
    assert study["summary"]["vertebrae"], "the shipped model finds vertebrae on gstt-covid-chest"
    rt = _get(env, study["downloads"]["rtstruct"] + "?identity=original", "clinician")
    assert rt.Modality == "RTSTRUCT" and rt.StudyInstanceUID == first.StudyInstanceUID
    assert rt.PatientID == first.PatientID
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence} <= set(originals)
    for roi in rt.ROIContourSequence:
        for contour in roi.ContourSequence:
            assert str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID) in originals
    levels = hd.seg.Segmentation.from_dataset(_get(env, study["downloads"]["levels_seg"] + "?identity=original",
                                                   "admin"))
    assert {uid for _s, _r, uid in levels.get_source_image_uids()} <= set(originals)


def test_original_identifiers_only_for_allowed_roles_and_audited(env: WebEnv, study: dict) -> None:
    url = study["downloads"]["seg"] + "?identity=original"
    for role in ("viewer", "researcher"):
        response = env.client.get(url, headers=bearer(env.tokens[role]))
        assert response.status_code == 403
        assert "only clinicians and admins" in response.json()["detail"] and role in response.json()["detail"]
        assert env.client.get(study["downloads"]["seg"], headers=bearer(env.tokens[role])).status_code == 200
    bad = env.client.get(study["downloads"]["seg"] + "?identity=patient", headers=bearer(env.tokens["clinician"]))
    assert bad.status_code == 422 and "identity" in bad.text
    env.client.get(url, headers=bearer(env.tokens["admin"]))
    database = open_database(env.settings.sqlalchemy_url)
    with database.session() as session:
        events = [(e.username, e.action, e.target) for e in recent_events(session, limit=100)]
    database.dispose()
    assert ("admin", "download.original", study["id"]) in events
    assert not any(action == "download.original" and user in ("viewer", "researcher") for user, action, _t in events)


def test_original_identifiers_are_sealed_in_the_database(env: WebEnv, originals: dict, study: dict) -> None:
    first = next(iter(originals.values()))
    database = b"".join(path.read_bytes() for path in env.settings.data_dir.glob("spineseg.db*"))
    for uid in (first.StudyInstanceUID, first.SeriesInstanceUID, first.FrameOfReferenceUID, *list(originals)[:3]):
        assert str(uid).encode() not in database, uid


def test_result_page_names_both_forms(env: WebEnv, study: dict) -> None:
    page = logged_in_client(env, "clinician").get(f"/studies/{study['id']}").text
    assert "For the original series" in page and "De-identified" in page
    assert re.search(rf'href="/api/studies/{study["id"]}/[^"]*seg\.dcm\?identity=original"', page)
    viewer_page = logged_in_client(env, "viewer").get(f"/studies/{study['id']}").text
    assert "?identity=original" not in viewer_page and "only clinicians and admins" in viewer_page
