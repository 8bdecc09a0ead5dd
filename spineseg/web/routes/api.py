"""The JSON API under ``/api``: health, studies (upload, list, read, delete), jobs (status,
cancel) and evaluation. File downloads live in ``downloads``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from spineseg.errors import InputError
from spineseg.imaging.pixel_size import check_pixel_mm
from spineseg.services.quality import verdict_of
from spineseg.services.runs import current_reason, current_run, run_downloads, runs_json
from spineseg.services.study_deletion import delete_study_and_files
from spineseg.services.study_intake import ReceivedFiles, accept_study, require_production_model, study_name
from spineseg.store import accounts
from spineseg.store.files import StudyFiles
from spineseg.store.models import Job, Study
from spineseg.store.studies import (
    FINISHED,
    StudyFilter,
    get_job,
    get_study,
    list_studies,
    new_id,
    queue_position,
    rename_study,
    request_cancel,
)
from spineseg.web.auth import Principal
from spineseg.web.body_limit import STREAMED_BODY
from spineseg.web.deps import CurrentUser, DbSession, FreesDisk, NeedsDiskRoom, Services, Uploader
from spineseg.web.ownership import require_owner_or_admin
from spineseg.web.uploads import receive_upload

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["api"])

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "the CT: many DICOM files of one series, or one .zip / NIfTI / "
                                         "PNG/JPEG/TIFF / .npy file"},
                "truth": {"type": "string", "format": "binary",
                          "description": "optional ground truth on the CT: a label map (NIfTI: binary, "
                                         "TotalSegmentator or VerSe ids) or a .zip of per-structure files "
                                         "(vertebrae_<LEVEL>.nii.gz, sacrum.nii.gz)"},
                "name": {"type": "string",
                         "description": "optional study name (default 'Study <short id>' with the modality, "
                                        "body part and shifted study date; file names are never used: they "
                                        "often carry patient identifiers)"},
                "site": {"type": "string", "description": "optional centre the study comes from"},
                "pixel_mm": {"type": "number", "description": "a single PNG/JPEG/TIFF or 2D NumPy slice's pixel "
                             "size in mm (it carries none; without it 1 mm is assumed and noted); refused for "
                             "DICOM and NIfTI"},
            },
        }}},
    }
}


def job_json(session: Any, job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "study_id": job.study_id,
        "status": job.status,
        "progress": round(job.progress, 4),
        "stage": job.stage,
        "error": job.error,
        "queue_position": queue_position(session, job=job),
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def study_json(session: Any, study: Study, *, full: bool = True) -> dict[str, Any]:
    """The study; results (model, volume, Dice, summary, metrics, downloads) are its current
    run's (``services.runs.current_run``; ``current_run_reason`` says why it is current), ``job``
    is its newest job, ``runs`` every run."""
    job = study.latest_job
    current = current_run(study)
    data: dict[str, Any] = {
        "id": study.id,
        "name": study.name,
        "created_at": study.created_at.isoformat(),
        "input_kind": study.input_kind,
        "has_truth": study.has_truth,
        "owner": study.owner.username if study.owner else None,
        "site": study.site,
        "patient_pseudonym": study.patient_pseudonym,
        "model_id": study.model_id,
        "current_run": current.id if current else None,
        "current_run_reason": current_reason(study),
        "spine_volume_ml": study.spine_volume_ml,
        "dice": study.dice,
        "quality_verdict": verdict_of(study.summary),  # the current run's (services.quality); None: not checked
        "job": job_json(session, job) if job else None,
    }
    if full:
        data["summary"] = study.summary
        data["metrics"] = study.metrics
        data["downloads"] = run_downloads(study) if current else None
        data["runs"] = runs_json(study)
    return data


@router.get("/health", summary="Health: database, queue, registry, production model, disk (no auth); 503 when "
                               "the service cannot serve",
            responses={503: {"description": "a check failed: the service cannot store or segment studies"}})
async def health(request: Request) -> JSONResponse:
    """Answered from the last report of the health monitor (refreshed every few seconds on its
    own thread), so it never waits on the database it reports on."""
    report = request.app.state.health.latest.to_json()
    return JSONResponse(report, status_code=503 if report["status"] == "unavailable" else 200)


@router.post("/studies", status_code=202, openapi_extra=UPLOAD_SCHEMA, max_body_size=STREAMED_BODY,
             dependencies=[NeedsDiskRoom],
             summary="Upload a CT (and optional ground truth); queues a segment job")
async def upload_study(request: Request, user: Uploader, services: Services) -> JSONResponse:
    """One request with every file. For large studies over a slow network use the resumable
    `/api/uploads`; both end in the same `accept_study`."""
    require_production_model(services.registry)
    files = StudyFiles.of(services.settings.studies_dir, new_id())
    files.create()
    try:
        received = await receive_upload(request, files.input_dir, files.truth_dir, services.settings.max_upload_bytes)
        pixel_mm = check_pixel_mm(received.fields.get("pixel_mm"))  # a picture's pixel size (issue 28.8)
    except BaseException:
        files.delete()
        raise
    accepted = await run_in_threadpool(
        accept_study, services, files, ReceivedFiles(received.files, received.truth, received.total_bytes,
                                                     name=received.fields.get("name", ""),
                                                     site=received.fields.get("site", ""), pixel_mm=pixel_mm),
        username=user.username, user_id=user.user_id)
    return JSONResponse({"study_id": accepted.study_id, "job_id": accepted.job_id}, status_code=202,
                        headers={"Location": f"/api/jobs/{accepted.job_id}"})


def _parse_date(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(name, f"expected a date like 2026-11-24, got {value!r}") from exc


@router.get("/studies", summary="List studies, newest first, with optional filters")
def studies(
    _user: CurrentUser,
    session: DbSession,
    q: Annotated[str | None, Query(description="text in the name or the start of the id")] = None,
    status: Annotated[str | None, Query(description="queued, running, done, failed or cancelled")] = None,
    model: Annotated[str | None, Query(description="model version id")] = None,
    date_from: Annotated[str | None, Query(description="ISO date")] = None,
    date_to: Annotated[str | None, Query(description="ISO date")] = None,
    with_truth: bool | None = None,
) -> list[dict[str, Any]]:
    filters = StudyFilter(search=q or None, status=status or None, model_id=model or None,
                          created_from=_parse_date(date_from, "date_from"),
                          created_to=_parse_date(date_to, "date_to"), with_truth=with_truth)
    listed = [study_json(session, s, full=False) for s in list_studies(session, filters=filters)]
    accounts.record(session, username=_user.username, action="study.list", detail=f"{len(listed)} studies")
    return listed


def load_study(session: Any, study_id: str) -> Study:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
    return study


@router.get("/studies/{study_id}", summary="A study: its runs, and its current run's summary, metrics (with a "
                                            "truth) and downloads")
def study(study_id: str, _user: CurrentUser, session: DbSession) -> dict[str, Any]:
    data = study_json(session, load_study(session, study_id))
    accounts.record(session, username=_user.username, action="study.view", target=study_id)
    return data


def discard_study(session: Any, services: Any, study_id: str, user: Principal) -> None:
    """Cancel the study's jobs, delete its rows (audited), then its files; only its owner or
    an admin may. Shared by the API and the studies page."""
    study = load_study(session, study_id)
    require_owner_or_admin(study, user, "delete")
    username = user.username
    delete_study_and_files(session, study=study, studies_dir=services.settings.studies_dir, username=username)


@router.delete("/studies/{study_id}", summary="Delete a study, its files and jobs (its owner or an admin)",
               dependencies=[FreesDisk])
def remove_study(study_id: str, user: Uploader, session: DbSession, services: Services) -> dict[str, Any]:
    discard_study(session, services, study_id, user)
    return {"deleted": study_id}


class StudyName(BaseModel):
    name: str = Field(description="the study's new name (one line, at most 100 characters); empty: 'Study <id>'")


@router.put("/studies/{study_id}/name", summary="Rename a study (its owner or an admin)")
def set_study_name(study_id: str, body: StudyName, user: Uploader, session: DbSession) -> dict[str, Any]:
    study = load_study(session, study_id)
    require_owner_or_admin(study, user, "rename")
    rename_study(session, study=study, name=study_name(study.id, body.name))
    accounts.record(session, username=user.username, action="study.rename", target=study_id)
    session.commit()  # before the answer: the next request must see it
    return {"study_id": study_id, "name": study.name}


@router.get("/jobs/{job_id}", summary="Status of a job: queued|running|done|failed|cancelled, progress 0..1")
def job_status(job_id: str, _user: CurrentUser, session: DbSession) -> dict[str, Any]:
    job = get_job(session, job_id=job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return job_json(session, job)


EVENT_POLL_S = 0.5
EVENT_KEEPALIVE_S = 15.0


def _job_snapshot(services: Any, job_id: str) -> dict[str, Any] | None:
    with services.database.session() as session:
        job = get_job(session, job_id=job_id)
        return None if job is None else job_json(session, job)


@router.get("/jobs/{job_id}/events", summary="Server-sent events: the job's status each time it changes",
            response_class=StreamingResponse)
async def job_events(job_id: str, request: Request, _user: CurrentUser, services: Services) -> StreamingResponse:
    """``text/event-stream``: one ``data: <job JSON>`` event per change, ending after the job
    reaches done, failed or cancelled (comment lines keep idle connections open)."""
    if await run_in_threadpool(_job_snapshot, services, job_id) is None:
        raise HTTPException(404, f"no job with id {job_id!r}")

    async def stream() -> AsyncIterator[str]:
        last: dict[str, Any] | None = None
        quiet_s = 0.0
        while not await request.is_disconnected():
            snapshot = await run_in_threadpool(_job_snapshot, services, job_id)
            if snapshot is None:
                return
            if snapshot != last:
                last, quiet_s = snapshot, 0.0
                yield f"data: {json.dumps(snapshot)}\n\n"
                if snapshot["status"] in FINISHED:
                    return
            elif quiet_s >= EVENT_KEEPALIVE_S:
                quiet_s = 0.0
                yield ": still working\n\n"
            await asyncio.sleep(EVENT_POLL_S)
            quiet_s += EVENT_POLL_S

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def cancel_study_job(session: Any, job_id: str, user: Principal) -> str:
    """Cancel the job (its study's owner or an admin only); returns its status. Shared by the
    API and the job page."""
    job = get_job(session, job_id=job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    require_owner_or_admin(job.study, user, "cancel a job of")
    status = request_cancel(session, job_id=job_id)
    if status is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return status


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job (its study's owner or an admin)")
def cancel_job(job_id: str, user: Uploader, session: DbSession) -> dict[str, Any]:
    cancel_study_job(session, job_id, user)
    accounts.record(session, username=user.username, action="cancel", target=job_id)
    job = get_job(session, job_id=job_id)
    return job_json(session, job) | {"cancel_requested": True}
