"""Store: migrations, accounts (argon2id, tokens stored hashed), job state transitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from spineseg.errors import InputError
from spineseg.store import accounts
from spineseg.store.database import Database, open_database
from spineseg.store.files import safe_file_name
from spineseg.store.models import ApiToken
from spineseg.store.studies import (
    StudyFilter,
    claim_job,
    create_job,
    create_study,
    finish_job,
    list_studies,
    new_id,
    request_cancel,
    requeue_interrupted,
)


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'db' / 'spineseg.db'}")


def test_migration_creates_every_table_and_is_repeatable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spineseg.db'}"
    open_database(url).dispose()
    database = open_database(url)  # a second start must not fail on existing tables
    tables = set(inspect(database.engine).get_table_names())
    assert {"users", "api_tokens", "studies", "jobs", "audit_events", "alembic_version"} <= tables


def test_passwords_are_argon2id_and_checked(database: Database) -> None:
    with database.session() as session:
        user = accounts.create_user(session, username="ann", password="long enough pw", role="viewer")
        assert user.password_hash.startswith("$argon2id$")
        assert accounts.authenticate(session, username="ann", password="long enough pw") is not None
        assert accounts.authenticate(session, username="ann", password="wrong password") is None
        assert accounts.authenticate(session, username="nobody", password="long enough pw") is None


@pytest.mark.parametrize(("username", "password", "role", "source"), [
    ("ann", "short", "viewer", "password"),
    ("ann", "long enough pw", "superuser", "role"),
    ("a b/c", "long enough pw", "viewer", "username"),
])
def test_bad_accounts_are_refused_naming_the_field(database: Database, username: str, password: str, role: str,
                                                   source: str) -> None:
    with database.session() as session, pytest.raises(InputError) as caught:
        accounts.create_user(session, username=username, password=password, role=role)
    assert caught.value.source == source


def test_duplicate_user_is_refused(database: Database) -> None:
    with database.session() as session:
        accounts.create_user(session, username="ann", password="long enough pw", role="viewer")
        with pytest.raises(InputError, match="already exists"):
            accounts.create_user(session, username="ann", password="long enough pw", role="admin")


def test_tokens_are_stored_hashed_and_can_be_revoked(database: Database) -> None:
    with database.session() as session:
        accounts.create_user(session, username="ann", password="long enough pw", role="clinician")
        row, secret = accounts.create_token(session, username="ann")
        stored = session.scalars(select(ApiToken.token_sha256)).all()
        assert secret not in stored and row.token_sha256 in stored
        assert accounts.user_for_token(session, token=secret).username == "ann"
        row.revoked = True
        assert accounts.user_for_token(session, token=secret) is None
        assert accounts.user_for_token(session, token="sst_unknown") is None


def _study_with_job(database: Database) -> tuple[str, str]:
    with database.session() as session:
        study_id = new_id()
        create_study(session, study_id=study_id, owner_id=None, name="case", input_kind="nifti",
                     input_path="/x.nii.gz", truth_path=None)
        return study_id, create_job(session, study_id=study_id).id


def test_a_job_is_claimed_once(database: Database) -> None:
    _study, job_id = _study_with_job(database)
    with database.session() as session:
        assert claim_job(session, job_id=job_id)
        assert not claim_job(session, job_id=job_id)  # a duplicate queue entry is skipped


def test_cancel_queued_job_prevents_its_claim(database: Database) -> None:
    _study, job_id = _study_with_job(database)
    with database.session() as session:
        assert request_cancel(session, job_id=job_id) == "cancelled"
        assert not claim_job(session, job_id=job_id)


def test_interrupted_running_jobs_are_requeued_finished_ones_are_not(database: Database) -> None:
    _s1, running = _study_with_job(database)
    _s2, done = _study_with_job(database)
    with database.session() as session:
        claim_job(session, job_id=running)
        claim_job(session, job_id=done)
        finish_job(session, job_id=done, status="done")
    with database.session() as session:
        assert requeue_interrupted(session) == [running]
        assert claim_job(session, job_id=running)


def test_status_filter_uses_the_latest_job(database: Database) -> None:
    study_a, job_a = _study_with_job(database)
    study_b, _job_b = _study_with_job(database)
    with database.session() as session:
        claim_job(session, job_id=job_a)
        finish_job(session, job_id=job_a, status="failed", error="bad")
    with database.session() as session:
        failed = [s.id for s in list_studies(session, filters=StudyFilter(status="failed"))]
        queued = [s.id for s in list_studies(session, filters=StudyFilter(status="queued"))]
    assert failed == [study_a] and queued == [study_b]


def test_uploaded_files_get_numbers_not_the_clients_names() -> None:
    taken: set[str] = set()
    assert safe_file_name("../../etc/passwd", taken) == "00001"
    assert safe_file_name("DOE_JANE/IM 1.DCM", taken) == "00002.dcm"
    assert safe_file_name("other/IM 1.dcm", taken) == "00003.dcm"
    assert safe_file_name("DOE_JANE_MRN-998877.nii.gz", taken) == "00004.nii.gz"
    assert safe_file_name("Doe Jane.zip", taken) == "00005.zip"
    assert safe_file_name("...", taken) == "00006"
    taken = {"00001.png"}
    assert safe_file_name("x.png", taken) == "00002.png" and taken == {"00001.png", "00002.png"}


def test_orphan_study_folders_are_found_only_when_old_and_unknown(tmp_path: Path) -> None:
    import os

    from spineseg.store.files import orphan_study_dirs

    known, orphan, fresh = (tmp_path / ("a" * 32)), (tmp_path / ("b" * 32)), (tmp_path / ("c" * 32))
    for folder in (known, orphan, fresh, tmp_path / "not-a-study"):
        folder.mkdir()
    old = 1_000_000_000
    for folder in (known, orphan, tmp_path / "not-a-study"):
        os.utime(folder, (old, old))
    assert orphan_study_dirs(tmp_path, {known.name}) == [orphan]
