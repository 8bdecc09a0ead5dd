"""A patient's studies in order: by the study date kept in the de-identified series (shifted by
the patient's own shift, so the interval is true) when every study has one, else by upload time;
a study without a finished run is listed with the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spineseg.services.deidentification import deidentify_dicom_folder
from spineseg.services.prior_studies import prior_changes_csv, prior_comparisons, stored_study_date
from spineseg.store.database import Database, open_database
from spineseg.store.models import Job, Study
from tests.imaging.phi_series import write_phi_series

KEY = b"k" * 32
UPLOADED = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SUMMARY = {"intensity": "hu", "quality": {"verdict": "ok"}, "vertebrae": [
    {"name": n, "verse_id": 20 + k, "confidence": 0.9, "complete": True, "centroid_mm": [0.0, 80.0, 300.0 - 30 * k],
     "measures": {"hu_mean": 120.0, "height_anterior_mm": 27.0, "height_middle_mm": 26.0, "height_posterior_mm": 28.0,
                  "genant_grade": 0, "assessable": True}} for k, n in enumerate(("L1", "L2", "L3"))]}


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'db' / 'spineseg.db'}")


def _dicom_study(tmp_path: Path, name: str, study_date: str) -> tuple[str, str]:
    """A series of the made-up patient, de-identified as an upload is: (stored folder, pseudonym)."""
    raw = tmp_path / name / "raw"
    write_phi_series(raw, count=2, patient={"study_date": study_date})
    stored = deidentify_dicom_folder(raw, tmp_path / name / "input", KEY)
    return str(stored.path), stored.pseudonym


def _add(session, study_id: str, *, path: str, kind: str, pseudonym: str, uploaded: datetime,
         summary: dict | None = SUMMARY) -> None:
    session.add(Study(id=study_id, name=study_id, input_kind=kind, input_path=path, truth_path=None,
                      created_at=uploaded, patient_pseudonym=pseudonym,
                      pinned_job_id=study_id + "-run" if summary else None, summary=summary))
    session.add(Job(id=study_id + "-run", study_id=study_id, kind="segment", status="done" if summary else "failed",
                    progress=1.0, stage="done", summary=summary, created_at=uploaded))


def test_ordered_by_the_shifted_study_date_with_the_true_interval(tmp_path: Path, database: Database) -> None:
    early, pseudonym = _dicom_study(tmp_path, "early", "20240229")
    late, same = _dicom_study(tmp_path, "late", "20250310")
    assert same == pseudonym
    with database.session() as session:  # the later scan was uploaded first
        _add(session, "late", path=late, kind="dicom", pseudonym=pseudonym, uploaded=UPLOADED)
        _add(session, "early", path=early, kind="dicom", pseudonym=pseudonym, uploaded=UPLOADED + timedelta(days=3))
    with database.session() as session:
        late_study, early_study = session.get(Study, "late"), session.get(Study, "early")
        shifted = stored_study_date(early_study)
        assert shifted is not None and shifted.isoformat() != "2024-02-29"  # the date itself was moved
        data = prior_comparisons(session, late_study)
        assert data["date_basis"] == "study date"
        assert [(s["id"], s["role"]) for s in data["studies"]] == [("early", "prior"), ("late", "this")]
        assert data["priors"][0]["interval_days"] == 375 and data["priors"][0]["flagged"] == []
        assert prior_comparisons(session, early_study)["priors"] == []


def test_a_study_without_a_date_orders_them_all_by_upload_time(tmp_path: Path, database: Database) -> None:
    dated, pseudonym = _dicom_study(tmp_path, "dated", "20250310")
    with database.session() as session:
        _add(session, "dated", path=dated, kind="dicom", pseudonym=pseudonym, uploaded=UPLOADED)
        _add(session, "nifti", path=str(tmp_path / "ct.nii.gz"), kind="nifti", pseudonym=pseudonym,
             uploaded=UPLOADED - timedelta(days=40))
        _add(session, "failed", path=str(tmp_path / "ct.nii.gz"), kind="nifti", pseudonym=pseudonym,
             uploaded=UPLOADED - timedelta(days=50), summary=None)
        _add(session, "stranger", path=str(tmp_path / "x.nii.gz"), kind="nifti", pseudonym="SPS-OTHER",
             uploaded=UPLOADED - timedelta(days=60))
    with database.session() as session:
        data = prior_comparisons(session, session.get(Study, "dated"))
        assert data["date_basis"] == "upload time"
        assert [s["id"] for s in data["studies"]] == ["failed", "nifti", "dated"]
        failed, nifti = data["priors"]
        assert failed["reason"] == "the prior has no finished run" and failed["interval_days"] == 50
        assert nifti["interval_days"] == 40 and nifti["compared"] == ["L1", "L2", "L3"]
        rows = prior_changes_csv(data).splitlines()
        assert rows[0].startswith("prior_study,prior_date,interval_days,level,compared,flagged")
        assert len(rows) == 1 + 1 + 3 and "the prior has no finished run" in rows[1]
        alone = prior_comparisons(session, session.get(Study, "stranger"))
        assert [s["id"] for s in alone["studies"]] == ["stranger"] and alone["priors"] == []
