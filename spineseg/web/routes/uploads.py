"""Resumable uploads under ``/api/uploads``, for large studies over slow or flaky networks.

``POST /api/uploads`` announces the files -> ``PUT .../files/{index}?offset=N`` sends each file
in chunks (raw bytes, at most ``MAX_CHUNK_BYTES``; a wrong offset gets 409 with the server's)
-> ``POST .../complete`` runs the same ingest as ``POST /api/studies``. ``GET`` tells the
offsets (a reloaded page or a script resumes from them), ``DELETE`` aborts. An upload belongs
to the user who started it: anyone else gets 404. Idle uploads are swept at start and hourly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from spineseg.services.resumable_uploads import (
    MAX_FILES,
    TRUTH,
    AnnouncedFile,
    UploadConflict,
    UploadState,
    abort_upload,
    complete_upload,
    record_activity,
    recover_interrupted_completions,
    start_upload,
    sweep_uploads,
    upload_state,
)
from spineseg.services.study_intake import check_identity, require_production_model
from spineseg.store.uploads import UPLOADING, UploadFolder
from spineseg.web.body_limit import ANNOUNCE_MAX_BYTES, STREAMED_BODY
from spineseg.web.chunks import MAX_CHUNK_BYTES, ChunkStalled, OffsetConflict, append_chunk
from spineseg.web.deps import AppServices, FreesDisk, NeedsDiskRoom, Services, Uploader
from spineseg.web.errors import error_body
from spineseg.web.uploads import UploadRefused, too_large_message

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 3600.0
UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="from POST /api/uploads")]


def _sweep(services: AppServices) -> list[str]:
    return sweep_uploads(services.database, services.settings.uploads_dir,
                         stale_hours=services.settings.upload_stale_hours)


@asynccontextmanager
async def sweep_uploads_periodically(app: FastAPI) -> AsyncIterator[None]:
    """Merged into the app's lifespan by ``include_router`` (it runs after the app's own start-up
    has built ``app.state.services``): sweep once at start, then every ``SWEEP_INTERVAL_S``."""
    services: AppServices = app.state.services
    await run_in_threadpool(recover_interrupted_completions, services.database,
                            uploads_dir=services.settings.uploads_dir, studies_dir=services.settings.studies_dir)
    await run_in_threadpool(_sweep, services)

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await run_in_threadpool(_sweep, services)
            except Exception:  # a database hiccup must not end the sweeping for good
                log.exception("sweeping stale uploads failed; trying again in %.0f s", SWEEP_INTERVAL_S)

    task = asyncio.create_task(every_interval())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


router = APIRouter(prefix="/api/uploads", tags=["uploads"], lifespan=sweep_uploads_periodically)

CHUNK_BODY = {
    "requestBody": {
        "required": True,
        "description": f"the file's bytes from `offset` on, at most {MAX_CHUNK_BYTES} bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


class FileSpec(BaseModel):
    name: str = Field(min_length=1, max_length=1024, description="the file's name or relative path, e.g. "
                                                                 "dicom/IM0001.dcm")
    size: int = Field(ge=0, description="bytes")


class NewUpload(BaseModel):
    files: list[FileSpec] = Field(min_length=1, description="the CT: DICOM files of one series, or one .zip / "
                                                            "NIfTI / image / .npy file")
    truth: FileSpec | None = Field(None, description="optional ground truth: a label map (NIfTI) or a .zip of "
                                                     "per-structure files (vertebrae_<LEVEL>.nii.gz)")
    purpose: Literal["study"] = "study"
    name: str = Field("", max_length=1000, description="optional study name (default 'Study <short id>' with "
                                                       "what de-identification keeps; never a file name)")
    site: str = Field("", max_length=1000, description="optional centre the study comes from")


def state_json(state: UploadState) -> dict[str, Any]:
    return {
        "upload_id": state.id,
        "purpose": state.purpose,
        "status": state.status,
        "total_bytes": state.total_bytes,
        "received_bytes": state.received_bytes,
        "chunk_bytes": MAX_CHUNK_BYTES,
        "files": [{"index": f.index, "name": f.name, "size": f.size, "role": f.role, "received": f.received}
                  for f in state.files],
        "study_id": state.study_id,
        "job_id": state.job_id,
        "study_name": state.study_name,
        "study_site": state.study_site,
        "created_at": state.created_at.isoformat(),
        "updated_at": state.updated_at.isoformat(),
    }


def _state_or_404(services: AppServices, upload_id: str, owner_id: int) -> UploadState:
    state = upload_state(services.database, services.settings.uploads_dir, upload_id=upload_id, owner_id=owner_id)
    if state is None:
        raise HTTPException(404, f"no upload with id {upload_id!r}")
    return state


def _offset_response(status: int, message: str, index: int, received: int) -> JSONResponse:
    return JSONResponse(error_body(message, field="offset") | {"index": index, "received": received}, status,
                        headers={"Upload-Offset": str(received)})


@router.post("", status_code=201, summary="Start a resumable upload: announce the files (names and sizes)",
             dependencies=[NeedsDiskRoom],
             max_body_size=ANNOUNCE_MAX_BYTES,
             responses={413: {"description": "over SPINESEG_MAX_UPLOAD_MB, or too many files"},
                        507: {"description": "the disk cannot hold it with every unfinished upload's outstanding "
                                             "bytes and a reserve (said in `detail`)"}})
async def create_upload(body: NewUpload, user: Uploader, services: Services) -> JSONResponse:
    """Returns the upload id and each file's `index` (the truth comes last, role `truth`) with
    `received` 0. Send each file with `PUT /api/uploads/{id}/files/{index}?offset=...`."""
    require_production_model(services.registry)  # before 500 MB travel for nothing
    name, site = check_identity(body.name, body.site)  # a bad name or site, too
    announced = [AnnouncedFile(f.name, f.size) for f in body.files]
    if body.truth is not None:
        announced.append(AnnouncedFile(body.truth.name, body.truth.size, TRUTH))
    if len(body.files) > MAX_FILES:
        raise UploadRefused(413, f"{len(body.files)} files announced; one upload takes at most {MAX_FILES}", "files")
    total = sum(f.size for f in announced)
    limit = services.settings.max_upload_bytes
    if total > limit:
        raise UploadRefused(413, f"{total} bytes announced: " + too_large_message(limit), "files")
    state = await run_in_threadpool(start_upload, services.database, services.settings.uploads_dir,
                                    owner_id=user.user_id, purpose=body.purpose, files=announced,
                                    study_name=name, study_site=site,
                                    reserve_bytes=services.settings.disk_reserve_bytes)
    log.info("upload %s started by %s: %d file(s), %d bytes", state.id, user.username, len(announced), total)
    return JSONResponse(state_json(state), 201, headers={"Location": f"/api/uploads/{state.id}"})


@router.get("/{upload_id}", summary="A resumable upload's status and each file's received bytes (offset)")
async def upload_status(upload_id: UploadId, user: Uploader, services: Services) -> dict[str, Any]:
    return state_json(await run_in_threadpool(_state_or_404, services, upload_id, user.user_id))


@router.put("/{upload_id}/files/{index}", openapi_extra=CHUNK_BODY, max_body_size=STREAMED_BODY,
            dependencies=[NeedsDiskRoom],
            summary="Send one chunk of a file at `offset` (409 with the server's offset when it differs)",
            responses={409: {"description": "wrong offset, or another chunk of the file is being written; "
                                            "`received` and the Upload-Offset header give the server's offset"},
                       408: {"description": "the body stalled; `received` tells what was kept"}})
async def put_chunk(upload_id: UploadId, index: int, request: Request, user: Uploader, services: Services,
                    offset: Annotated[int, Query(ge=0, description="where this chunk starts in the file")]
                    ) -> JSONResponse:
    state = await run_in_threadpool(_state_or_404, services, upload_id, user.user_id)
    if not 0 <= index < len(state.files):
        raise HTTPException(404, f"upload {upload_id} has no file {index} (it has {len(state.files)})")
    if state.status != UPLOADING:
        raise HTTPException(409, f"the upload is {state.status}: it takes no more chunks")
    file = state.files[index]
    declared = request.headers.get("content-length")
    part = UploadFolder.of(services.settings.uploads_dir, upload_id).part(index)
    try:
        received = await append_chunk(part, request.stream(), offset=offset, size=file.size,
                                      declared_bytes=int(declared) if declared and declared.isdigit() else None)
    except OffsetConflict as exc:
        return _offset_response(409, f"{file.name}: {exc.message}", index, exc.received)
    except ChunkStalled as exc:
        log.info("upload %s file %d: %s", upload_id, index, exc.message)
        return _offset_response(408, f"{file.name}: {exc.message}", index, exc.received)
    finally:
        await run_in_threadpool(record_activity, services.database, upload_id=upload_id)
    return JSONResponse({"index": index, "received": received, "size": file.size, "complete": received == file.size},
                        headers={"Upload-Offset": str(received)})


@router.post("/{upload_id}/complete", status_code=202, dependencies=[NeedsDiskRoom],
             summary="Finish a resumable upload: validate it like POST /api/studies and queue a segment job",
             responses={409: {"description": "a file is incomplete (named), or the upload is being completed"},
                        422: {"description": "a file cannot be used (named); the upload and its files are removed"}})
async def complete(upload_id: UploadId, user: Uploader, services: Services) -> JSONResponse:
    state = await run_in_threadpool(_state_or_404, services, upload_id, user.user_id)
    try:
        accepted = await run_in_threadpool(complete_upload, services, state, username=user.username,
                                           user_id=user.user_id)
    except UploadConflict as exc:
        raise HTTPException(409, exc.message) from exc
    return JSONResponse({"study_id": accepted.study_id, "job_id": accepted.job_id}, 202,
                        headers={"Location": f"/api/jobs/{accepted.job_id}"})


@router.delete("/{upload_id}", dependencies=[FreesDisk], summary="Abort a resumable upload and remove what it received")
async def abort(upload_id: UploadId, user: Uploader, services: Services) -> dict[str, Any]:
    try:
        removed = await run_in_threadpool(abort_upload, services.database, services.settings.uploads_dir,
                                          upload_id=upload_id, owner_id=user.user_id, username=user.username)
    except UploadConflict as exc:
        raise HTTPException(409, exc.message) from exc
    if not removed:
        raise HTTPException(404, f"no upload with id {upload_id!r}")
    return {"deleted": upload_id}
