"""Received files -> a queued study. The one path every upload takes once its bytes are in the
study's folder (a multipart ``POST /api/studies`` or a completed resumable upload), so the two
cannot drift: arrange the input, read it (and the truth) once, create the study and its job,
write the audit record, put the job on the queue."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from spineseg.config import Settings
from spineseg.errors import InputError, ModelNotFoundError
from spineseg.jobs.queue import JobQueue
from spineseg.registry import NO_MODEL_MESSAGE, Registry
from spineseg.services.ingest import arrange_input, check_inputs
from spineseg.store import accounts
from spineseg.store.database import Database
from spineseg.store.files import StudyFiles
from spineseg.store.studies import create_job, create_study

log = logging.getLogger(__name__)


class IntakeServices(Protocol):
    """What taking in a study needs (the web app's ``AppServices`` has all four)."""

    settings: Settings
    database: Database
    registry: Registry
    queue: JobQueue


@dataclass(frozen=True)
class ReceivedFiles:
    """Files already in a study's folder: CT files (disk path -> name the client gave), an
    optional truth file (disk path, client name) and the bytes received."""

    ct: dict[Path, str]
    truth: tuple[Path, str] | None
    total_bytes: int


@dataclass(frozen=True)
class AcceptedStudy:
    study_id: str
    job_id: str


def require_production_model(registry: Registry) -> None:
    """``ModelNotFoundError`` (503) before any upload is taken when nothing could segment it."""
    if registry.production_id() is None:
        raise ModelNotFoundError(NO_MODEL_MESSAGE)


def public_text(text: str, files: StudyFiles) -> str:
    """Error text without the server's folders: upload paths become the uploaded names."""
    for folder, label in ((files.input_dir, "the uploaded files"), (files.truth_dir, "the ground truth"),
                          (files.root, "the upload")):
        text = text.replace(str(folder) + "/", "").replace(str(folder), label)
    return text


def study_name(client_names: list[str]) -> str:
    """A name for the list: the file's name, or a folder's name and its file count."""
    if len(client_names) == 1:
        return client_names[0]
    folders = {n.replace("\\", "/").split("/")[0] for n in client_names if "/" in n}
    first = folders.pop() if len(folders) == 1 else client_names[0]
    return f"{first} ({len(client_names)} files)"


def _validate(received: ReceivedFiles, files: StudyFiles, settings: Settings) -> tuple[Path, str, Path | None]:
    input_path, kind = arrange_input(received.ct, files.input_dir, settings)
    truth_path = received.truth[0] if received.truth else None
    try:
        check_inputs(input_path, None)
    except InputError as exc:
        exc.field = "files"
        raise
    if truth_path is not None:
        try:
            check_inputs(input_path, truth_path)
        except InputError as exc:
            exc.field = "truth"
            raise
    return input_path, kind, truth_path


def accept_study(services: IntakeServices, files: StudyFiles, received: ReceivedFiles, *, username: str,
                 user_id: int, note: str = "") -> AcceptedStudy:
    """Validate the files in ``files`` and queue a segment job for them. Blocking (reads the
    whole volume): call it from a worker thread.

    On an ``InputError`` (naming the bad file, with ``field`` ``files`` or ``truth`` and no
    server path in its text) or any other failure the study's folder is removed first.
    ``note`` is appended to the audit record's detail."""
    try:
        input_path, kind, truth_path = _validate(received, files, services.settings)
    except InputError as exc:
        files.delete()
        exc.source = public_text(exc.source, files)
        exc.reason = public_text(exc.reason, files)
        raise
    except BaseException:
        files.delete()
        raise
    study_id = files.root.name
    detail = f"{len(received.ct)} file(s), {received.total_bytes} bytes" + (f", {note}" if note else "")
    try:
        with services.database.session() as session:
            create_study(session, study_id=study_id, owner_id=user_id, name=study_name(sorted(received.ct.values())),
                         input_kind=kind, input_path=str(input_path),
                         truth_path=str(truth_path) if truth_path else None)
            job_id = create_job(session, study_id=study_id).id
            accounts.record(session, username=username, action="upload", target=study_id, detail=detail)
    except BaseException:
        files.delete()  # no row points at them: an upload that did not become a study leaves nothing
        raise
    try:
        services.queue.enqueue_segment(job_id)
    except (OSError, sqlite3.Error) as exc:  # the row is committed: the next start puts it on the queue
        log.error("job %s is saved but could not be put on the queue now (%s)", job_id, exc)
    log.info("study %s accepted (%s), job %s queued", study_id, detail, job_id)
    return AcceptedStudy(study_id, job_id)
