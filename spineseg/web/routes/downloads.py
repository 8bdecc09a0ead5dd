"""Study files: the NIfTI CT/mask/truth, summary JSON, overlay images (one slice, or all as a
zip), the STL surface and the DICOM SEG. The mesh and the SEG are made on first request and
kept (in the run's own folder). A file that does not exist (yet) is a 404 that says why.

Each download exists twice: ``/api/studies/<id>/<file>`` is the study's current run (the
one it shows, chosen by the rules of ``services.runs``: ``current_run``), and
``/api/studies/<id>/runs/<run id>/<file>`` is that run's, whichever is current."""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import nibabel as nib
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.imaging.overlay import axial_slice_count, write_overlays
from spineseg.services.dicom_seg import write_dicom_seg
from spineseg.services.level_exports import write_levels_dicom_seg, write_vertebrae_stl_zip
from spineseg.services.levels import withheld_labels
from spineseg.services.mesh import write_mask_stl
from spineseg.services.original_series import original_offer, original_series_of, reidentified_dicom
from spineseg.services.quality import verdict_of
from spineseg.services.rtstruct import write_rtstruct
from spineseg.services.runs import current_run, find_run, run_files
from spineseg.services.uncertainty import UNCERTAINTY_FILE
from spineseg.store import accounts
from spineseg.store.files import RunFiles
from spineseg.store.models import Job, Study
from spineseg.web.deps import CurrentUser, DbSession, Services
from spineseg.web.routes.api import load_study

router = APIRouter(prefix="/api/studies/{study_id}", tags=["downloads"])

NIFTI = "application/gzip"


def _binary(media_type: str) -> dict[int | str, dict[str, object]]:
    """OpenAPI: the 200 answer is a file of ``media_type`` (not JSON)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": "the file", "content": {media_type: binary}}}


@dataclass(frozen=True)
class RunTarget:
    """The study, the run whose files are asked for, and that run's files."""

    study: Study
    run: Job
    files: RunFiles


def _what(request: Request) -> str:
    """The audit detail: the file asked for (and its query, e.g. the overlay's slice)."""
    name = request.url.path.rsplit("/", 1)[-1]
    return f"{name} {request.url.query}" if request.url.query else name


def _target(request: Request, session: DbSession, services: Services, user: CurrentUser, study_id: str,
            run_id: str | None) -> RunTarget:
    """The run's files (the current run when ``run_id`` is ``None``); records the download in
    the audit trail. 404 saying why when there is no such run or it has no results."""
    study = load_study(session, study_id)
    if run_id is None:
        run = current_run(study)
        if run is None:
            job = study.latest_job
            raise HTTPException(404, f"no results yet: the study's job is {job.status if job else 'missing'}")
    else:
        run = find_run(study, run_id)
        if run is None:
            raise HTTPException(404, f"study {study_id} has no run {run_id!r}")
        if run.status != "done":
            raise HTTPException(404, f"no results in run {run_id}: it is {run.status}")
    accounts.record(session, username=user.username, action="download", target=study_id,
                    detail=f"{_what(request)} run={run.id}")
    return RunTarget(study, run, run_files(services.settings.studies_dir, run))


def current_target(request: Request, study_id: str, session: DbSession, services: Services,
                   user: CurrentUser) -> RunTarget:
    return _target(request, session, services, user, study_id, None)


def chosen_target(request: Request, study_id: str, run_id: str, session: DbSession, services: Services,
                  user: CurrentUser) -> RunTarget:
    return _target(request, session, services, user, study_id, run_id)


def _file(path: Path, media_type: str, filename: str) -> FileResponse:
    if not path.is_file():
        raise HTTPException(404, f"{filename} is missing from the study's outputs")
    return FileResponse(path, media_type=media_type, filename=filename)


Identity = Annotated[Literal["deidentified", "original"], Query(
    description="deidentified (default): the stored file, referencing the pseudonymised series; original: the "
                "original patient, study, series, instance and frame-of-reference UIDs put back, so it loads onto "
                "the uploaded images (clinicians and admins only, audited)")]


async def _dicom_answer(target: RunTarget, path: Path, filename: str, identity: str, user: CurrentUser,
                        session: DbSession, services: Services) -> Response:
    """The run's DICOM output at ``path``, de-identified as stored, or for the original series
    (issue 28 item 2): 403/409 saying why not, an audit record when given."""
    if identity != "original" or not path.is_file():
        return _file(path, "application/dicom", filename)
    offer = original_offer(session, target.study, user.role)
    if not offer.available:
        raise HTTPException(403 if offer.kept else 409, f"identity=original: {offer.reason}")
    try:
        original = original_series_of(session, services.settings, target.study)
        data = await run_in_threadpool(reidentified_dicom, path, original)
    except ValueError as exc:
        raise HTTPException(409, f"{filename}: {exc}") from exc
    name = filename.removesuffix(".dcm") + "-original.dcm"
    accounts.record(session, username=user.username, action="download.original", target=target.study.id,
                    detail=f"{path.name} run={target.run.id}: original patient and UIDs put back")
    return Response(data, media_type="application/dicom",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _stem(target: RunTarget) -> str:
    return f"spineseg-{target.study.id[:8]}-{target.run.id[:8]}"


def _mask_array(files: RunFiles) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(files.mask))
    return np.asarray(image.dataobj, dtype=np.uint8), image.affine


def _render_overlay(files: RunFiles, slice_index: int | None, with_truth: bool) -> tuple[bytes, int, int]:
    volume = load_volume(files.ct)
    mask_array, _affine = _mask_array(files)
    truth = None
    if with_truth and files.truth_on_grid.is_file():
        truth = np.asarray(nib.load(str(files.truth_on_grid)).dataobj, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="spineseg-overlay-") as folder:
        slices = None if slice_index is None else [slice_index]
        written = write_overlays(volume, mask_array, Path(folder), slices=slices, truth=truth)
        count = axial_slice_count(volume)  # along inferior-superior, whatever the storage order
        if not written:
            raise InputError("slice", f"must lie in 0..{count - 1} (axial slices, 0 = most inferior)")
        chosen = written[len(written) // 2]
        return chosen.read_bytes(), int(chosen.stem.split("_")[-1]), count


def _overlays_zip(files: RunFiles, which: str) -> bytes:
    """Every slice with spine (``spine``), every slice (``all``) or the job's five (``summary``)."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="spineseg-overlays-") as folder:
        if which == "summary":
            pngs = sorted(files.overlays.glob("*.png"))
        else:
            volume = load_volume(files.ct)
            truth = None
            if files.truth_on_grid.is_file():
                truth = np.asarray(nib.load(str(files.truth_on_grid)).dataobj, dtype=np.uint8)
            pngs = write_overlays(volume, _mask_array(files)[0], Path(folder), slices=which, truth=truth)
        if not pngs:
            raise HTTPException(404, "no overlay images for this run (no slice holds spine: ask for slices=all)")
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for png in pngs:
                archive.write(png, png.name)
    return buffer.getvalue()


def add_download_routes(prefix: str, target_of: Callable[..., RunTarget], whose: str) -> None:
    """Every download at ``prefix + <file>``, its run chosen by the dependency ``target_of``
    (set as each endpoint's ``target`` annotation: this module's annotations are strings, and a
    local alias could not be resolved from them)."""
    target_type = Annotated[RunTarget, Depends(target_of)]

    def get(path: str, summary: str, responses: dict[int | str, dict[str, object]] | None = None
            ) -> Callable[[Callable[..., object]], Callable[..., object]]:
        def register(endpoint: Callable[..., object]) -> Callable[..., object]:
            endpoint.__annotations__["target"] = target_type
            router.add_api_route(prefix + path, endpoint, methods=["GET"], summary=summary, responses=responses)
            return endpoint
        return register

    @get("/mask.nii.gz", summary=f"The spine mask (uint8 NIfTI on the input grid) of {whose}",
                responses=_binary(NIFTI))
    def mask(target: RunTarget) -> FileResponse:
        return _file(target.files.mask, NIFTI, f"{_stem(target)}-mask.nii.gz")

    @get("/uncertainty.nii.gz", summary=f"Where the network was unsure: the probability margin "
                                        f"(uint8 percent NIfTI on the input grid, docs/quality.md) of {whose}",
         responses=_binary(NIFTI))
    def uncertainty(target: RunTarget) -> FileResponse:
        return _file(target.files.folder / UNCERTAINTY_FILE, NIFTI, f"{_stem(target)}-uncertainty.nii.gz")

    @get("/ct.nii.gz", summary=f"The CT as NIfTI (int16 HU), as the viewer shows it, of {whose}",
                responses=_binary(NIFTI))
    def ct(target: RunTarget) -> FileResponse:
        return _file(target.files.ct, NIFTI, f"{_stem(target)}-ct.nii.gz")

    @get("/truth.nii.gz", summary=f"The ground truth on the CT grid (only when one was uploaded), "
                                                  f"of {whose}", responses=_binary(NIFTI))
    def truth(target: RunTarget) -> FileResponse:
        if not target.study.has_truth:
            raise HTTPException(404, "no ground truth was uploaded with this study")
        return _file(target.files.truth_on_grid, NIFTI, f"{_stem(target)}-truth.nii.gz")

    @get("/summary.json", summary=f"Spine volume, slices, model version, timings (and metrics) "
                                                  f"of {whose}")
    def summary(target: RunTarget) -> Response:
        # Read whole, not streamed: the job rewrites it (one rename) while its exports follow, and a
        # stream opened on the old file after its size was taken from the new one would break off.
        path = target.files.summary
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise HTTPException(404, f"{_stem(target)}-summary.json is missing from the study's outputs") from None
        return Response(body, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{_stem(target)}-summary.json"'})

    @get("/overlays.zip", summary=f"The overlay PNGs of every axial slice with spine (or all, or the five "
         f"summary ones), zipped, of {whose}", responses=_binary("application/zip"))
    async def overlays_zip(
        target: RunTarget,
        slices: Annotated[Literal["spine", "all", "summary"], Query(
            description="spine: every axial slice with spine; all: every axial slice; summary: the five "
                        "written with the results")] = "spine",
    ) -> Response:
        data = await run_in_threadpool(_overlays_zip, target.files, slices)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{_stem(target)}-overlays.zip"'})

    @get("/overlay.png", summary=f"The paper's overlay image of one axial slice (truth in blue) "
                                                 f"of {whose}", responses=_binary("image/png"))
    async def overlay(
        target: RunTarget,
        slice: Annotated[int | None, Query(description="axial slice on the RAS grid, 0 = most inferior")] = None,
        truth: bool = True,
    ) -> Response:
        data, index, count = await run_in_threadpool(_render_overlay, target.files, slice, truth)
        return Response(data, media_type="image/png", headers={"X-Slice": str(index), "X-Slice-Count": str(count)})

    @get("/mesh.stl", summary=f"The spine surface as binary STL in world (RAS+) millimetres, "
                                              f"of {whose}", responses=_binary("model/stl"))
    async def mesh(target: RunTarget) -> FileResponse:
        files = target.files
        if not files.mesh.is_file():
            mask_array, affine = await run_in_threadpool(_mask_array, files)
            if not mask_array.any():
                raise HTTPException(404, "the mask is empty (no spine found), so there is no surface to download")
            await run_in_threadpool(write_mask_stl, mask_array, affine, files.mesh)
        return _file(files.mesh, "model/stl", f"{_stem(target)}-spine.stl")

    @get("/seg.dcm", summary=f"DICOM SEG referencing the source series (DICOM input only), "
                                             f"of {whose}", responses=_binary("application/dicom"))
    async def dicom_seg(target: RunTarget, user: CurrentUser, session: DbSession, services: Services,
                        identity: Identity = "deidentified") -> Response:
        study, run, files = target.study, target.run, target.files
        if study.input_kind != "dicom":
            raise HTTPException(404, f"the input was {study.input_kind}, not DICOM: there is no source series "
                                     "for a DICOM SEG to reference (download the NIfTI mask instead)")
        if not files.seg_dcm.is_file():
            mask_array, affine = await run_in_threadpool(_mask_array, files)
            series_uid = (run.summary or {}).get("series_uid")
            await run_in_threadpool(partial(write_dicom_seg, quality=verdict_of(run.summary)), mask_array, affine,
                                    Path(study.input_path), series_uid, files.seg_dcm,
                                    model_id=run.model_version or "unknown")
        return await _dicom_answer(target, files.seg_dcm, f"{_stem(target)}-seg.dcm", identity, user, session, services)


def _levels_array(files: RunFiles) -> tuple[np.ndarray, np.ndarray]:
    if not files.levels.is_file():
        raise HTTPException(404, "this run has no vertebra levels (it was made before levels were computed)")
    image = nib.load(str(files.levels))
    return np.asarray(image.dataobj, dtype=np.int16), image.affine


def add_level_routes(prefix: str, target_of: Callable[..., RunTarget], whose: str) -> None:
    """The per-vertebra downloads (levels, names and colours, measurements, STL zip, SEG)."""
    target_type = Annotated[RunTarget, Depends(target_of)]

    def get(path: str, summary: str, media_type: str):
        def register(endpoint: Callable[..., object]) -> Callable[..., object]:
            endpoint.__annotations__["target"] = target_type
            responses = None if media_type == "application/json" else _binary(media_type)
            router.add_api_route(prefix + path, endpoint, methods=["GET"], summary=summary, responses=responses)
            return endpoint
        return register

    @get("/levels.nii.gz", f"One label per vertebra (int16 NIfTI, VerSe ids; unnamed 101, 102...) of {whose}", NIFTI)
    def levels(target: RunTarget) -> FileResponse:
        return _file(target.files.levels, NIFTI, f"{_stem(target)}-levels.nii.gz")

    @get("/levels_colours.json", f"Each level label's name and RGB colour, for viewers and legends, of {whose}",
         "application/json")
    def levels_colours(target: RunTarget) -> FileResponse:
        return _file(target.files.levels_colours, "application/json", f"{_stem(target)}-levels_colours.json")

    @get("/vertebrae.csv", f"Per-vertebra trabecular HU, body heights and their flags (CSV) of {whose}", "text/csv")
    def vertebrae_csv(target: RunTarget) -> FileResponse:
        return _file(target.files.vertebrae_csv, "text/csv", f"{_stem(target)}-vertebrae.csv")

    @get("/vertebrae_stl.zip", f"One binary STL per vertebra (RAS+ mm), zipped, of {whose}", "application/zip")
    async def vertebrae_stl(target: RunTarget) -> FileResponse:
        files = target.files
        if not files.vertebrae_stl.is_file():
            array, affine = await run_in_threadpool(_levels_array, files)
            await run_in_threadpool(write_vertebrae_stl_zip, array, affine, files.vertebrae_stl)
        return _file(files.vertebrae_stl, "application/zip", f"{_stem(target)}-vertebrae_stl.zip")

    @get("/levels_seg.dcm", f"DICOM SEG with one coded segment per vertebra (DICOM input only) of {whose}",
         "application/dicom")
    async def levels_seg(target: RunTarget, user: CurrentUser, session: DbSession, services: Services,
                         identity: Identity = "deidentified") -> Response:
        write = partial(write_levels_dicom_seg, model_id=target.run.model_version or "unknown",
                        quality=verdict_of(target.run.summary), withheld=withheld_labels(target.run.summary))
        await _dicom_levels_export(target, target.files.levels_seg_dcm, write,
                                   "there is no source series for a DICOM SEG to reference")
        return await _dicom_answer(target, target.files.levels_seg_dcm, f"{_stem(target)}-levels_seg.dcm", identity,
                                   user, session, services)

    @get("/rtstruct.dcm", f"RT Structure Set with one ROI per vertebra (DICOM input only) of {whose}",
         "application/dicom")
    async def rtstruct(target: RunTarget, user: CurrentUser, session: DbSession, services: Services,
                       identity: Identity = "deidentified") -> Response:
        await _dicom_levels_export(target, target.files.rtstruct,
                                   partial(write_rtstruct, withheld=withheld_labels(target.run.summary)),
                                   "an RTSTRUCT needs the source series to reference")
        return await _dicom_answer(target, target.files.rtstruct, f"{_stem(target)}-rtstruct.dcm", identity, user,
                                   session, services)


async def _dicom_levels_export(target: RunTarget, path: Path, write: Callable[..., object], why: str) -> None:
    """Make a run's DICOM export of its levels at ``path`` when missing, with
    ``write(levels, affine, dicom_folder, series_uid, path)``; 404 for a study that is not DICOM."""
    study, run = target.study, target.run
    if study.input_kind != "dicom":
        raise HTTPException(404, f"the input was {study.input_kind}, not DICOM: {why} (download levels.nii.gz instead)")
    if not path.is_file():
        array, affine = await run_in_threadpool(_levels_array, target.files)
        series_uid = (run.summary or {}).get("series_uid")
        await run_in_threadpool(write, array, affine, Path(study.input_path), series_uid, path)


add_download_routes("", current_target, "the study's current run")
add_level_routes("", current_target, "the study's current run")
add_level_routes("/runs/{run_id}", chosen_target, "one run")
add_download_routes("/runs/{run_id}", chosen_target, "one run")
