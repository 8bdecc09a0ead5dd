"""Retention: studies past SPINESEG_RETENTION_DAYS go with their files, each deletion audited;
newer studies, datasets and model versions stay; off by default."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spineseg.cli.main import main
from spineseg.config import Settings
from spineseg.errors import InputError
from spineseg.services.retention import RetentionSweeper, run_retention
from spineseg.store import audit
from spineseg.store.database import Database, open_database
from spineseg.store.datasets import create_dataset, list_datasets
from spineseg.store.files import StudyFiles
from spineseg.store.models import Study
from spineseg.store.studies import create_job, create_study

SECRET = "retention-test-secret-0123456789abcdefgh"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key=SECRET, retention_days=30)


@pytest.fixture
def database(settings: Settings) -> Database:
    db = open_database(settings.sqlalchemy_url)
    audit.use_key(db, SECRET)
    yield db
    db.dispose()


def add_study(database: Database, settings: Settings, study_id: str, age_days: float) -> Path:
    files = StudyFiles.of(settings.studies_dir, study_id)
    files.create()
    (files.input_dir / "ct.nii.gz").write_bytes(b"x")
    with database.session() as session:
        study = create_study(session, study_id=study_id, owner_id=None, name=study_id, input_kind="nifti",
                             input_path=str(files.input_dir / "ct.nii.gz"), truth_path=None)
        study.created_at = datetime.now(UTC) - timedelta(days=age_days)
        create_job(session, study_id=study_id)
    return files.root


def test_old_studies_go_with_their_files_and_each_deletion_is_audited(database: Database, settings: Settings) -> None:
    old = add_study(database, settings, "a" * 32, 31)
    new = add_study(database, settings, "b" * 32, 29)
    with database.session() as session:
        create_dataset(session, name="kept", description="", created_by=None)
    result = run_retention(database, settings)
    assert result.deleted == ["a" * 32]
    assert not old.exists() and new.exists()
    with database.session() as session:
        assert [s.id for s in session.query(Study)] == ["b" * 32]
        assert [d.name for d in list_datasets(session)] == ["kept"]
        deletions = audit.search(session, action="delete")
        assert [(e.username, e.target, e.detail) for e in deletions] == [("retention", "a" * 32, "older than 30 days")]
        assert audit.verify(session).intact


def test_retention_is_off_by_default_and_refuses_a_negative_limit(database: Database, tmp_path: Path) -> None:
    off = Settings(data_dir=tmp_path, secret_key=SECRET)
    add_study(database, off, "c" * 32, 4000)
    assert off.retention_days == 0 and run_retention(database, off).deleted == []
    with pytest.raises(InputError, match="SPINESEG_RETENTION_DAYS"):
        run_retention(database, off, days=-1)
    RetentionSweeper(database, off).start().stop()  # off: no thread, nothing deleted
    with database.session() as session:
        assert session.query(Study).count() == 1


def test_the_daily_sweeper_runs_on_its_thread(database: Database, settings: Settings) -> None:
    import time

    old = add_study(database, settings, "d" * 32, 40)
    sweeper = RetentionSweeper(database, settings, first_delay_s=0.01, interval_s=3600).start()
    deadline = time.monotonic() + 10
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sweeper.stop()
    assert not old.exists()


def test_cli_retention_run_and_dry_run(database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPINESEG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SPINESEG_SECRET_KEY", SECRET)
    monkeypatch.setenv("SPINESEG_RETENTION_DAYS", "10")
    monkeypatch.setattr(sys, "argv", ["spineseg"])
    monkeypatch.chdir(settings.data_dir)
    old = add_study(database, settings, "e" * 32, 11)
    assert main(["retention", "run", "--dry-run"]) == 0
    assert "would delete 1 studies" in capsys.readouterr().out and old.exists()
    assert main(["retention", "run"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 studies" in out and "e" * 32 in out and not old.exists()
    monkeypatch.setenv("SPINESEG_RETENTION_DAYS", "0")
    assert main(["retention", "run"]) == 0 and "retention is off" in capsys.readouterr().out


def test_expired_pacs_return_headers_are_erased_even_with_retention_off(tmp_path: Path) -> None:
    from spineseg.services.sealing import seal, sealing_key
    from spineseg.store.pacs_links import add_link, get_link, set_return_header

    settings = Settings(data_dir=tmp_path, secret_key=SECRET)  # retention off: studies stay
    database = open_database(settings.sqlalchemy_url)
    audit.use_key(database, SECRET)
    now = datetime.now(UTC)
    sealed = seal(sealing_key(settings), {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]}})
    for study_id, expires in (("c" * 32, now - timedelta(hours=1)), ("d" * 32, now + timedelta(days=6))):
        add_study(database, settings, study_id, 1)
        with database.session() as session:
            add_link(session, study_id=study_id, origin="dimse", endpoint="CT1", study_uid="1.2.3", series_uid="1.2.4",
                     uid_map={})
            set_return_header(session, study_id=study_id, sealed=sealed, expires_at=expires)
    assert "DOE" not in sealed
    assert run_retention(database, settings, dry_run=True).identities_erased == []
    result = run_retention(database, settings)
    assert result.cutoff is None and result.deleted == [] and result.identities_erased == ["c" * 32]
    with database.session() as session:
        expired, kept = get_link(session, study_id="c" * 32), get_link(session, study_id="d" * 32)
        assert expired.return_header is None and "expired before the result could be sent" in expired.send_error
        assert kept.return_header == sealed
        assert [e.target for e in audit.search(session, action="pacs.identity_expired")] == ["c" * 32]
        assert audit.verify(session).intact
    database.dispose()
