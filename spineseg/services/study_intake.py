"""Received files -> a queued study. The one path every upload takes once its bytes are in the
study's folder (a multipart ``POST /api/studies`` or a completed resumable upload), so the two
cannot drift: arrange the input, read it (and the truth) once, de-identify the files
(``services.deidentification``: nothing identifying is stored), create the study and its job,
write the audit record, put the job on the queue."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session

from spineseg.config import Settings
from spineseg.errors import InputError, public_text
from spineseg.imaging.pixel_size import pixel_size_error, write_pixel_size
from spineseg.jobs.queue import JobQueue
from spineseg.names import check_typed_name
from spineseg.registry import Registry, usable_production
from spineseg.services.deidentification import DeidentifiedInput, deidentify_input, deidentify_truth
from spineseg.services.ingest import (
    arrange_input,
    check_inputs,
    check_truth,
    extract_limit_bytes,
    unpack_truth,
    validation_slot,
)
from spineseg.services.original_series import keep_original_identifiers
from spineseg.services.runs import new_run
from spineseg.services.stage_times import StageTimes, write_intake_times
from spineseg.store import accounts
from spineseg.store.database import Database
from spineseg.store.datasets import check_name
from spineseg.store.files import StudyFiles
from spineseg.store.studies import create_study

log = logging.getLogger(__name__)


class IntakeServices(Protocol):
    """What taking in a study needs (the web app's ``AppServices`` has all four)."""

    settings: Settings
    database: Database
    registry: Registry
    queue: JobQueue


PICTURE_KINDS = ("image", "numpy")  # inputs that carry no voxel size (imaging.pixel_size)


@dataclass(frozen=True)
class ReceivedFiles:
    """Files already in a study's folder: CT files (disk path -> name the client gave), an
    optional truth file (disk path, client name) and the bytes received."""

    ct: dict[Path, str]
    truth: tuple[Path, str] | None
    total_bytes: int
    name: str = ""  # the name the uploader chose; empty: "Study <short id>"
    site: str = ""  # the centre the study comes from (multi-centre evaluation); empty: none
    pixel_mm: float | None = None  # a 2D picture's pixel size, asked at upload (it carries none)


@dataclass(frozen=True)
class AcceptedStudy:
    study_id: str
    job_id: str


def require_production_model(registry: Registry) -> None:
    """``ModelNotFoundError`` (503) before any upload is taken when nothing could segment it,
    ``ModelUnavailableError`` (503, with the reason) when the production model's files are
    unusable (``registry.usable_production``)."""
    usable_production(registry)


def public_text_of(text: str, files: StudyFiles, received: ReceivedFiles | None = None) -> str:
    """Error text without the server's folders: each received file's path becomes the name the
    client gave it (on disk it is only numbered, ``store.files.safe_file_name``), other upload
    paths the words for their folder."""
    named = list(received.ct.items()) + ([received.truth] if received.truth else []) if received else []
    return public_text(text, (*named, (files.input_dir, "the uploaded files"), (files.truth_dir, "the ground truth"),
                              (files.root, "the upload")))


MAX_NAME_LENGTH = 100


def study_name(study_id: str, chosen: str = "", deidentified: DeidentifiedInput | None = None) -> str:
    """The uploader's ``chosen`` name (one line, at most ``MAX_NAME_LENGTH`` characters), else
    ``Study <short id>`` with the modality, body part and (shifted) study date the
    de-identification kept. Never a file name: those often carry the patient's name or record
    number."""
    text = check_typed_name(" ".join(chosen.split()), "name")
    if len(text) > MAX_NAME_LENGTH:
        raise InputError("name", f"is {len(text)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    if text:
        return text
    kept = (deidentified.modality, deidentified.body_part, deidentified.study_date) if deidentified else ()
    facts = " ".join(v for v in kept if v)
    return f"Study {study_id[:8]}" + (f" {facts}" if facts else "")


def check_identity(name: str, site: str) -> tuple[str, str]:
    """The uploader's name (``""``: the default comes later) and site, checked before any file
    travels or is read: ``InputError`` on field ``name`` or ``site``."""
    chosen = " ".join(name.split())
    try:
        if chosen:
            study_name("0" * 32, chosen)
        return chosen, check_name(site, "site") if site.strip() else ""
    except InputError as exc:
        exc.field = exc.source  # "name" or "site"
        raise


def _validate(received: ReceivedFiles, files: StudyFiles, settings: Settings,
              times: StageTimes) -> tuple[Path, str, Path | None, DeidentifiedInput]:
    input_path, kind = arrange_input(received.ct, files.input_dir, settings)
    if received.pixel_mm is not None:
        if kind not in PICTURE_KINDS:
            raise pixel_size_error(f"is only for a single PNG/JPEG/TIFF or 2D NumPy slice; a {kind} file carries "
                                   "its own voxel size: leave the pixel size empty")
        write_pixel_size(files.input_dir, received.pixel_mm)  # beside the picture, read with it
    truth_path = received.truth[0] if received.truth else None
    if truth_path is not None:
        try:  # a .zip of per-structure files, as the dataset page takes it
            truth_path = unpack_truth(truth_path, extract_limit_bytes(settings))
        except InputError as exc:
            exc.field = "truth"
            raise
    try:
        with times.stage("read"):
            volume = check_inputs(input_path, None)
    except InputError as exc:
        exc.field = "files"
        raise
    if received.pixel_mm is not None and volume.shape[2] != 1:
        raise pixel_size_error(f"is only for a single 2D slice; this array has {volume.shape[2]} slices "
                               "(a 3D array is read with 1 mm voxels)")
    if truth_path is not None:
        try:  # onto the CT just read: the CT is not read a second time
            with times.stage("read_truth"), validation_slot():
                check_truth(volume, truth_path)
        except InputError as exc:
            exc.field = "truth"
            raise
    del volume
    try:  # after the reads, so a bad file is refused with the reader's own words
        with times.stage("deidentify"):
            deidentified = deidentify_input(input_path, kind, files.input_dir, settings)
    except InputError as exc:
        exc.field = "files"
        raise
    if truth_path is not None:
        with times.stage("deidentify"):
            truth_path = deidentify_truth(truth_path)
    return deidentified.path, kind, truth_path, deidentified


def accept_study(services: IntakeServices, files: StudyFiles, received: ReceivedFiles, *, username: str,
                 user_id: int, note: str = "", on_created: Callable[[Session, str], None] | None = None,
                 keep_original_series: bool = True) -> AcceptedStudy:
    """Validate the files in ``files`` and queue a segment job for them. Blocking (reads the
    whole volume): call it from a worker thread.

    On an ``InputError`` (naming the bad file, with ``field`` ``files`` or ``truth`` and no
    server path in its text) or any other failure the study's folder is removed first.
    ``note`` is appended to the audit record's detail. ``on_created(session, study_id)`` runs in
    the transaction that creates the study (a PACS import records its link there). A DICOM
    series' original UIDs and patient attributes are kept apart from the study
    (``store.original_series``) unless ``keep_original_series`` is false (a PACS import keeps
    them in its link)."""
    try:
        _chosen, site = check_identity(received.name, received.site)  # refused before any work
        times = StageTimes()
        input_path, kind, truth_path, deidentified = _validate(received, files, services.settings, times)
        name = study_name(files.root.name, received.name, deidentified)
    except InputError as exc:
        files.delete()
        exc.source = public_text_of(exc.source, files, received)
        exc.reason = public_text_of(exc.reason, files, received)
        raise
    except BaseException:
        files.delete()
        raise
    study_id = files.root.name
    detail = f"{len(received.ct)} file(s), {received.total_bytes} bytes" + (f", {note}" if note else "")
    stored = time.perf_counter()
    try:
        with services.database.session() as session:
            study = create_study(session, study_id=study_id, owner_id=user_id, name=name,
                                 input_kind=kind, input_path=str(input_path),
                                 truth_path=str(truth_path) if truth_path else None,
                                 patient_pseudonym=deidentified.pseudonym)
            study.site = site
            if on_created is not None:
                on_created(session, study_id)
            if keep_original_series and deidentified.uid_map:
                keep_original_identifiers(session, services.settings, study_id=study_id,
                                          uid_map=deidentified.uid_map, header=deidentified.original_header or {})
            job_id = new_run(session, study_id=study_id, registry=services.registry,
                             device=services.settings.device).id
            accounts.record(session, username=username, action="upload", target=study_id, detail=detail)
    except BaseException:
        files.delete()  # no row points at them: an upload that did not become a study leaves nothing
        raise
    times.add("store", time.perf_counter() - stored)
    write_intake_times(files.root, times)  # before the job can start: it reads them
    try:
        services.queue.enqueue_segment(job_id)
    except (OSError, sqlite3.Error) as exc:  # the row is committed: the next start puts it on the queue
        log.error("job %s is saved but could not be put on the queue now (%s)", job_id, exc)
    log.info("study %s accepted (%s), job %s queued", study_id, detail, job_id)
    return AcceptedStudy(study_id, job_id)
