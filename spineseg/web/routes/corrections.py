"""Corrections of a study's labels (issue 32): save a new version (clinician and above), list
the versions, download one, and its viewer copy for the editor. The logic lives in
``services.corrections``; versions are never overwritten."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from spineseg.errors import InputError, InputTooLarge
from spineseg.model.level_ids import CRANIOCAUDAL, NAME_BY_VERSE, colour
from spineseg.services import viewer_files
from spineseg.services.corrections import (
    FIELD,
    CorrectionRequest,
    correction_json,
    prepare_correction,
    store_correction,
    study_truth,
)
from spineseg.services.evaluation_truth import training_cases
from spineseg.services.runs import find_run, run_files, runs_of
from spineseg.store import accounts
from spineseg.store.corrections import file_of, get_correction
from spineseg.store.files import StudyFiles
from spineseg.store.models import Study
from spineseg.store.studies import get_study
from spineseg.web.body_limit import STREAMED_BODY
from spineseg.web.deps import Corrector, CurrentUser, DbSession, NeedsDiskRoom, Services, run_in_session

router = APIRouter(prefix="/api/studies/{study_id}/corrections", tags=["corrections"])

NIFTI_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary",
    "description": "the edited label volume: NIfTI (.nii or gzip .nii.gz) on the grid of the run's mask (or a box "
                   "of it in any axis order, as the viewer's canonical crop), 0 and VerSe vertebra ids"}}}}}


def _study(session: Session, study_id: str) -> Study:
    study = get_study(session, study_id=study_id)
    if study is None:
        raise HTTPException(404, f"no study with id {study_id!r}")
    return study


async def _receive(request: Request, folder: Path, limit: int) -> Path:
    """The request body in a file of ``folder`` (named .nii.gz when it is gzip), at most ``limit`` bytes."""
    raw = folder / "upload"
    size = 0
    with raw.open("wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InputTooLarge(FIELD, f"the label volume is over the upload limit of {limit // 2**20} MB")
            handle.write(chunk)
    if size == 0:
        raise InputError(FIELD, "the request body is empty: send the edited label volume as NIfTI")
    with raw.open("rb") as handle:
        zipped = handle.read(2) == b"\x1f\x8b"
    return raw.rename(folder / ("labels.nii.gz" if zipped else "labels.nii"))


@router.post("", status_code=201, openapi_extra=NIFTI_BODY, max_body_size=STREAMED_BODY, dependencies=[NeedsDiskRoom],
             summary="Save an edited label volume as the study's next correction version (clinician and above)")
async def save_correction(study_id: str, request: Request, user: Corrector, services: Services,
                          run: Annotated[str, Query(description="the run the edit was made on")],
                          base: Annotated[int | None, Query(description="the correction version the edit started "
                                                                        "from (omitted: the run's levels)")] = None,
                          edit_seconds: Annotated[float | None, Query(description="how long the edit took")] = None,
                          note: Annotated[str, Query(max_length=500)] = "") -> dict[str, Any]:
    settings = services.settings
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="correction-", dir=settings.uploads_dir) as folder:
        upload = await _receive(request, Path(folder), settings.max_upload_bytes)
        ask = CorrectionRequest(run_id=run, base_version=base, edit_seconds=edit_seconds, note=note)

        def prepare(session: Session) -> dict[str, Any]:
            return prepare_correction(settings.studies_dir, _study(session, study_id), session, ask, upload)

        prepared = await run_in_session(services, prepare)

    def store(session: Session) -> dict[str, Any]:
        study = _study(session, study_id)
        correction = store_correction(session, settings.studies_dir, study, prepared, user.username)
        effort = correction.effort
        accounts.record(session, username=user.username, action="study.correct", target=study_id,
                        detail=f"version {correction.version} from run {correction.run_id} "
                               f"({correction.model_version}); {effort['voxels_changed']} voxels changed, "
                               f"{effort['levels_renamed']} level(s) renamed; "
                               f"{correction.edit_seconds if correction.edit_seconds is not None else '?'} s")
        return correction_json(study, correction)

    return await run_in_session(services, store)


@router.get("", summary="The study's correction versions (oldest first), where its truth comes from, and which runs "
            "were made by a model version that saw the study in training")
def list_corrections(study_id: str, _user: CurrentUser, session: DbSession, services: Services) -> dict[str, Any]:
    study = _study(session, study_id)
    truth = study_truth(services.settings.studies_dir, study)
    seen = {version: training_cases(session, services.registry, version).saw(study)
            for version in {run.model_version for run in runs_of(study) if run.model_version}}
    return {"truth": truth.to_json() if truth else None,
            "runs_in_training": {run.id: seen.get(run.model_version, False) for run in runs_of(study)},
            "versions": [correction_json(study, c) for c in study.corrections],
            "levels": [{"label": v, "name": n, "rgb": list(colour(v))}
                       for v, n in sorted(NAME_BY_VERSE.items(), key=lambda item: CRANIOCAUDAL.index(item[0]))]}


def _version_file(session: Session, services: Services, study_id: str, version: int) -> tuple[Study, Path]:
    study = _study(session, study_id)
    correction = get_correction(session, study_id=study_id, version=version)
    if correction is None:
        raise HTTPException(404, f"study {study_id} has no correction version {version}")
    return study, file_of(StudyFiles.of(services.settings.studies_dir, study_id).root, correction)


@router.get("/{version}/labels.nii.gz", summary="One correction version's labels (VerSe ids, NIfTI)")
def download_correction(study_id: str, version: int, user: CurrentUser, session: DbSession,
                        services: Services) -> FileResponse:
    _study_row, path = _version_file(session, services, study_id, version)
    accounts.record(session, username=user.username, action="download", target=study_id,
                    detail=f"correction v{version}")
    return FileResponse(path, media_type="application/gzip", filename=f"correction-v{version}.nii.gz")


@router.get("/{version}/viewer/labels.nii", summary="One correction version on the viewer CT's grid (uint8, gzip-"
            "encoded), for the editor to start from")
async def correction_viewer_copy(study_id: str, version: int, _user: CurrentUser, services: Services,
                                 run: Annotated[str, Query(description="the run whose CT the viewer shows")]
                                 ) -> FileResponse:
    def paths(session: Session) -> tuple[Path, Path, Path]:
        study, path = _version_file(session, services, study_id, version)
        job = find_run(study, run)
        if job is None:
            raise HTTPException(404, f"study {study_id} has no run {run!r}")
        return StudyFiles.of(services.settings.studies_dir, study_id).root, run_files(services.settings.studies_dir,
                                                                                       job).ct, path

    root, ct, path = await run_in_session(services, paths)
    copy = await run_in_threadpool(viewer_files.label_copy, root, ct, path)
    return FileResponse(copy, media_type="application/octet-stream", filename="labels.nii", headers={
        "Content-Encoding": "gzip", "X-Decoded-Length": str(viewer_files.decoded_size(copy))})

