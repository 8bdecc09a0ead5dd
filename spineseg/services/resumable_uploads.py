"""Resumable uploads: announce the files, receive them in chunks (``web/chunks.py``), then
complete: the parts become a study through exactly the path a multipart upload takes
(``study_intake.accept_study``). State lives in the ``uploads`` table (owner, files, status,
last activity) and in the part files, whose lengths are the offsets, so an upload survives a
server restart and is resumed from ``upload_state``.

Every function opens its own short database session: none is held while a body is read or a
volume is checked.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from spineseg.errors import InputError, StorageFullError
from spineseg.imaging.limits import MAX_SERIES_FILES
from spineseg.services.study_intake import (
    AcceptedStudy,
    IntakeServices,
    ReceivedFiles,
    accept_study,
    require_production_model,
)
from spineseg.store import accounts
from spineseg.store.database import Database
from spineseg.store.files import StudyFiles, safe_file_name
from spineseg.store.studies import get_study, new_id
from spineseg.store.uploads import (
    COMPLETING,
    DONE,
    UPLOADING,
    UploadFolder,
    begin_completion,
    create_upload,
    declared_bytes_in_progress,
    delete_upload,
    get_upload,
    interrupted_completions,
    mark_done,
    reopen_upload,
    stale_upload_ids,
    touch_upload,
    upload_folders,
    upload_ids,
)

log = logging.getLogger(__name__)

MAX_FILES = MAX_SERIES_FILES  # the same cap as a multipart upload or a zip: one series
# Free disk an announce may not take: room for results (a 512x512x1000 CT's outputs need about
# 1 GB), the database and the log while the announced uploads arrive.
DISK_RESERVE_BYTES = 2 * 2**30
_ANNOUNCE_LOCK = threading.Lock()
CT, TRUTH = "ct", "truth"


class UploadConflict(Exception):
    """The upload is not in a state that allows the request (incomplete, being completed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class AnnouncedFile:
    name: str
    size: int
    role: str = CT


@dataclass(frozen=True)
class FileState:
    index: int
    name: str
    size: int
    role: str
    received: int


@dataclass(frozen=True)
class UploadState:
    """A snapshot of one upload, offsets read from its part files."""

    id: str
    purpose: str
    status: str
    files: tuple[FileState, ...]
    created_at: datetime
    updated_at: datetime
    study_id: str | None
    job_id: str | None
    study_name: str = ""  # the name and site the study will get (checked when announced)
    study_site: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def received_bytes(self) -> int:
        return sum(f.received for f in self.files)

    def incomplete(self) -> list[FileState]:
        return [f for f in self.files if f.received != f.size]


def free_disk_bytes(folder: Path) -> int:
    """Free bytes on the filesystem of ``folder`` (or of its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def outstanding_bytes(session: Session, uploads_dir: Path) -> int:
    """Bytes announced by unfinished uploads that have not arrived yet (what they will still
    write); what arrived is on disk already, so it is in the free space's count."""
    return sum(max(0, total - UploadFolder.of(uploads_dir, upload_id).received_total())
               for upload_id, total in declared_bytes_in_progress(session).items())


def _check_room(session: Session, uploads_dir: Path, announced: int,
                reserve: int = DISK_RESERVE_BYTES) -> None:
    """``StorageFullError`` (507) when ``announced`` bytes on top of every unfinished upload's
    outstanding bytes would not fit in the free disk minus ``reserve`` (SPINESEG_DISK_RESERVE_MB)."""
    free = free_disk_bytes(uploads_dir)
    waiting = outstanding_bytes(session, uploads_dir)
    room = free - reserve - waiting
    if announced > room:
        gib = 2**30
        raise StorageFullError(
            f"not enough disk for this upload: it announces {announced / gib:.2f} GiB, and with "
            f"{waiting / gib:.2f} GiB still to arrive for unfinished uploads and {reserve / gib:.0f} GiB "
            f"kept in reserve, {max(room, 0) / gib:.2f} GiB of the {free / gib:.2f} GiB free are left: finish or "
            "abort other uploads, or free disk space, then announce it again")


def start_upload(database: Database, uploads_dir: Path, *, owner_id: int, purpose: str,
                 files: list[AnnouncedFile], study_name: str = "", study_site: str = "",
                 reserve_bytes: int = DISK_RESERVE_BYTES) -> UploadState:
    """Record a new upload of ``files`` (the caller has checked their count and total size,
    and the study's name and site: ``study_intake.check_identity``). ``StorageFullError``
    when the disk cannot hold it with every other unfinished upload (``_check_room``; checked
    and recorded under one lock, so two announces cannot both take the last room)."""
    upload_id = new_id()
    with _ANNOUNCE_LOCK, database.session() as session:
        _check_room(session, uploads_dir, sum(f.size for f in files), reserve_bytes)
        create_upload(session, upload_id=upload_id, owner_id=owner_id, purpose=purpose,
                      files=[{"name": f.name, "size": f.size, "role": f.role} for f in files],
                      study_name=study_name, study_site=study_site)
    UploadFolder.of(uploads_dir, upload_id).create()  # after the row: a folder without one is debris
    state = upload_state(database, uploads_dir, upload_id=upload_id, owner_id=owner_id)
    assert state is not None
    return state


def upload_state(database: Database, uploads_dir: Path, *, upload_id: str, owner_id: int) -> UploadState | None:
    """The upload as its owner sees it; ``None`` for an unknown id or another user's upload."""
    with database.session() as session:
        upload = get_upload(session, upload_id=upload_id, owner_id=owner_id)
        if upload is None:
            return None
        row = (upload.purpose, upload.status, list(upload.files), upload.created_at, upload.updated_at,
               upload.study_id, upload.job_id, upload.study_name, upload.study_site)
    purpose, status, files, created_at, updated_at, study_id, job_id, name, site = row
    folder = UploadFolder.of(uploads_dir, upload_id)
    states = tuple(FileState(i, f["name"], int(f["size"]), f["role"],
                             int(f["size"]) if status == DONE else folder.received(i)) for i, f in enumerate(files))
    return UploadState(upload_id, purpose, status, states, created_at, updated_at, study_id, job_id, name, site)


def record_activity(database: Database, *, upload_id: str) -> None:
    with database.session() as session:
        touch_upload(session, upload_id=upload_id)


def _link_parts(folder: UploadFolder, files: tuple[FileState, ...], study: StudyFiles) -> ReceivedFiles:
    """Hard-link (or copy, across file systems) the parts into the study's folder under the
    names a multipart upload would get. The parts stay until the study is recorded, so a
    completion cut off by a crash or a busy database loses nothing: it can be run again."""
    ct: dict[Path, str] = {}
    truth: tuple[Path, str] | None = None
    taken: set[str] = set()
    for f in files:
        target_dir = study.truth_dir if f.role == TRUTH else study.input_dir
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / safe_file_name(f.name, set() if f.role == TRUTH else taken)
        part = folder.part(f.index)
        if part.exists():
            try:
                os.link(part, target)
            except OSError:  # another file system, or links not supported
                shutil.copyfile(part, target)
        else:  # an empty file never had a chunk
            target.touch()
        if f.role == TRUTH:
            truth = (target, f.name)
        else:
            ct[target] = f.name
    return ReceivedFiles(ct=ct, truth=truth, total_bytes=sum(f.size for f in files))


def _discard(database: Database, uploads_dir: Path, upload_id: str) -> None:
    with database.session() as session:
        delete_upload(session, upload_id=upload_id)
    UploadFolder.of(uploads_dir, upload_id).delete()


def complete_upload(services: IntakeServices, state: UploadState, *, username: str, user_id: int) -> AcceptedStudy:
    """Turn a fully received upload into a study and a queued job (blocking: run it in a
    worker thread). Completing a ``done`` upload again answers with the same ids.

    Raises ``UploadConflict`` while a file is incomplete or another request is completing it,
    ``ModelNotFoundError`` with no production model (the upload is kept), and the intake's
    ``InputError`` naming a bad file -- after which the upload and its files are gone."""
    if state.status == DONE and state.study_id and state.job_id:
        return AcceptedStudy(state.study_id, state.job_id)
    if state.status != UPLOADING:
        raise UploadConflict(f"the upload is {state.status}: wait for that to finish")
    missing = state.incomplete()
    if missing:
        first = missing[0]
        raise UploadConflict(f"{first.name!r} (file {first.index}) has {first.received} of {first.size} bytes "
                             f"({len(missing)} file(s) incomplete): send the rest first")
    require_production_model(services.registry)
    database, settings = services.database, services.settings
    study_id = new_id()
    with database.session() as session:
        if not begin_completion(session, upload_id=state.id, study_id=study_id):
            raise UploadConflict("the upload is already being completed")
    folder = UploadFolder.of(settings.uploads_dir, state.id)
    study = StudyFiles.of(settings.studies_dir, study_id)
    study.create()
    try:
        received = replace(_link_parts(folder, state.files, study), name=state.study_name, site=state.study_site)
        accepted = accept_study(services, study, received, username=username, user_id=user_id,
                                note=f"resumable upload {state.id}")
    except InputError:  # a file that cannot be used: the upload is over
        _discard(database, settings.uploads_dir, state.id)
        study.delete()
        raise
    except BaseException:  # not the files' fault (a busy database, a stop): keep them for a retry
        log.exception("completing upload %s failed; its files are kept and it can be completed again", state.id)
        study.delete()
        try:
            with database.session() as session:
                reopen_upload(session, upload_id=state.id)
        except SQLAlchemyError:
            log.warning("upload %s stays 'completing' until the next start resolves it", state.id)
        raise
    with database.session() as session:
        mark_done(session, upload_id=state.id, study_id=accepted.study_id, job_id=accepted.job_id)
    folder.delete()
    return accepted


def abort_upload(database: Database, uploads_dir: Path, *, upload_id: str, owner_id: int, username: str) -> bool:
    """Remove the owner's upload and its files; ``False`` when there is none to remove."""
    with database.session() as session:
        upload = get_upload(session, upload_id=upload_id, owner_id=owner_id)
        if upload is None:
            return False
        if upload.status == COMPLETING:
            raise UploadConflict("the upload is being completed and can no longer be aborted")
        delete_upload(session, upload_id=upload_id)
        accounts.record(session, username=username, action="upload.abort", target=upload_id)
    UploadFolder.of(uploads_dir, upload_id).delete()
    return True


def recover_interrupted_completions(database: Database, *, uploads_dir: Path, studies_dir: Path) -> list[str]:
    """At start only (no completion can be running): an upload left ``completing`` either
    became a study before the stop (marked done, its parts removed) or did not (open for a new
    ``complete``; a half-made study folder is removed). Returns the upload ids resolved."""
    with database.session() as session:
        pending = [(u.id, u.study_id) for u in interrupted_completions(session)]
    for upload_id, study_id in pending:
        with database.session() as session:
            study = get_study(session, study_id=study_id) if study_id else None
            if study is not None and study.latest_job is not None:
                mark_done(session, upload_id=upload_id, study_id=study.id, job_id=study.latest_job.id)
                done = True
            else:
                reopen_upload(session, upload_id=upload_id)
                done = False
        if done:
            UploadFolder.of(uploads_dir, upload_id).delete()
            log.info("upload %s had become study %s before the last stop; marked done", upload_id, study_id)
        else:
            if study_id:
                StudyFiles.of(studies_dir, study_id).delete()
            log.info("upload %s was being completed when the server stopped; it can be completed again", upload_id)
    return [upload_id for upload_id, _ in pending]


def sweep_uploads(database: Database, uploads_dir: Path, *, stale_hours: float,
                  now: datetime | None = None) -> list[str]:
    """Remove uploads idle for ``stale_hours`` (rows and files) and folders without a row;
    returns the ids removed. Folders are listed before rows are read: a row is committed
    before its folder is made, so a folder listed here whose row is absent is debris."""
    folders = upload_folders(uploads_dir)
    idle_since = (now or datetime.now(UTC)) - timedelta(hours=stale_hours)
    with database.session() as session:
        stale = stale_upload_ids(session, idle_since=idle_since)
        for upload_id in stale:
            delete_upload(session, upload_id=upload_id)
        known = upload_ids(session)
    removed = list(stale)
    for upload_id in stale:
        UploadFolder.of(uploads_dir, upload_id).delete()
        log.info("removed upload %s: nothing arrived for %s h", upload_id, stale_hours)
    for folder in folders:
        if folder.root.name not in known and folder.root.name not in removed:
            folder.delete()
            removed.append(folder.root.name)
            log.info("removed %s: an upload folder without a database row", folder.root)
    return removed
