"""Study files: the NIfTI CT/mask/truth, summary JSON, overlay images (one slice, or all as a
zip), the STL surface and the DICOM SEG. The mesh and the SEG are made on first request and
kept. A file that does not exist (yet) is a 404 that says why."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

import nibabel as nib
import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from spineseg.errors import InputError
from spineseg.imaging.io import load_volume
from spineseg.imaging.overlay import write_overlays
from spineseg.services.dicom_seg import write_dicom_seg
from spineseg.services.mesh import write_mask_stl
from spineseg.store import accounts
from spineseg.store.files import StudyFiles
from spineseg.store.models import Study
from spineseg.web.auth import Principal
from spineseg.web.deps import CurrentUser, DbSession, Services
from spineseg.web.routes.api import load_study

router = APIRouter(prefix="/api/studies/{study_id}", tags=["downloads"])

NIFTI = "application/gzip"


def _binary(media_type: str) -> dict[int | str, dict[str, object]]:
    """OpenAPI: the 200 answer is a file of ``media_type`` (not JSON)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": "the file", "content": {media_type: binary}}}


def _finished(session: DbSession, study_id: str, services: Services,
              downloader: Principal | None = None, what: str = "") -> tuple[Study, StudyFiles]:
    """The study with a finished job and its files; records the download in the audit trail."""
    study = load_study(session, study_id)
    job = study.latest_job
    if job is None or job.status != "done":
        state = job.status if job else "missing"
        raise HTTPException(404, f"no results yet: the study's job is {state}")
    if downloader is not None:
        accounts.record(session, username=downloader.username, action="download", target=study_id, detail=what)
    return study, StudyFiles.of(services.settings.studies_dir, study_id)


def _file(path: Path, media_type: str, filename: str) -> FileResponse:
    if not path.is_file():
        raise HTTPException(404, f"{filename} is missing from the study's outputs")
    return FileResponse(path, media_type=media_type, filename=filename)


def _stem(study: Study) -> str:
    return f"spineseg-{study.id[:8]}"


@router.get("/mask.nii.gz", summary="The spine mask (uint8 NIfTI on the input grid)",
            responses=_binary(NIFTI))
def mask(study_id: str, user: CurrentUser, session: DbSession, services: Services) -> FileResponse:
    study, files = _finished(session, study_id, services, user, "mask.nii.gz")
    return _file(files.mask, NIFTI, f"{_stem(study)}-mask.nii.gz")


@router.get("/ct.nii.gz", summary="The CT as NIfTI (int16 HU), as the viewer shows it",
            responses=_binary(NIFTI))
def ct(study_id: str, user: CurrentUser, session: DbSession, services: Services) -> FileResponse:
    study, files = _finished(session, study_id, services, user, "ct.nii.gz")
    return _file(files.ct, NIFTI, f"{_stem(study)}-ct.nii.gz")


@router.get("/truth.nii.gz", summary="The ground truth on the CT grid (only when one was uploaded)",
            responses=_binary(NIFTI))
def truth(study_id: str, user: CurrentUser, session: DbSession, services: Services) -> FileResponse:
    study, files = _finished(session, study_id, services, user, "truth.nii.gz")
    if not study.has_truth:
        raise HTTPException(404, "no ground truth was uploaded with this study")
    return _file(files.truth_on_grid, NIFTI, f"{_stem(study)}-truth.nii.gz")


@router.get("/summary.json", summary="Spine volume, slices, model version, timings (and metrics)")
def summary(study_id: str, user: CurrentUser, session: DbSession, services: Services) -> FileResponse:
    study, files = _finished(session, study_id, services, user, "summary.json")
    return _file(files.summary, "application/json", f"{_stem(study)}-summary.json")


@router.get("/overlays.zip", summary="The overlay PNGs of the summary slices, zipped",
            responses=_binary("application/zip"))
def overlays_zip(study_id: str, user: CurrentUser, session: DbSession, services: Services) -> Response:
    study, files = _finished(session, study_id, services, user, "overlays.zip")
    pngs = sorted(files.overlays.glob("*.png"))
    if not pngs:
        raise HTTPException(404, "no overlay images were written for this study")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for png in pngs:
            archive.write(png, png.name)
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{_stem(study)}-overlays.zip"'})


def _mask_array(files: StudyFiles) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(files.mask))
    return np.asarray(image.dataobj, dtype=np.uint8), image.affine


def _render_overlay(files: StudyFiles, slice_index: int | None, with_truth: bool) -> tuple[bytes, int, int]:
    volume = load_volume(files.ct)
    mask_array, _affine = _mask_array(files)
    truth = None
    if with_truth and files.truth_on_grid.is_file():
        truth = np.asarray(nib.load(str(files.truth_on_grid)).dataobj, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="spineseg-overlay-") as folder:
        slices = None if slice_index is None else [slice_index]
        written = write_overlays(volume, mask_array, Path(folder), slices=slices, truth=truth)
        if not written:
            raise InputError("slice", f"must lie in 0..{volume.shape[2] - 1} (axial slices, inferior first)")
        chosen = written[len(written) // 2]
        return chosen.read_bytes(), int(chosen.stem.split("_")[-1]), volume.shape[2]


@router.get("/overlay.png", summary="The paper's overlay image of one axial slice (truth in blue)",
            responses=_binary("image/png"))
async def overlay(
    study_id: str, user: CurrentUser, session: DbSession, services: Services,
    slice: Annotated[int | None, Query(description="axial slice on the RAS grid, 0 = most inferior")] = None,
    truth: bool = True,
) -> Response:
    _study, files = await run_in_threadpool(_finished, session, study_id, services, user,
                                            f"overlay.png slice={slice}")
    data, index, count = await run_in_threadpool(_render_overlay, files, slice, truth)
    return Response(data, media_type="image/png", headers={"X-Slice": str(index), "X-Slice-Count": str(count)})


@router.get("/mesh.stl", summary="The spine surface as binary STL in world (RAS+) millimetres",
            responses=_binary("model/stl"))
async def mesh(study_id: str, user: CurrentUser, session: DbSession, services: Services) -> FileResponse:
    study, files = await run_in_threadpool(_finished, session, study_id, services, user, "mesh.stl")
    if not files.mesh.is_file():
        mask_array, affine = await run_in_threadpool(_mask_array, files)
        if not mask_array.any():
            raise HTTPException(404, "the mask is empty (no spine found), so there is no surface to download")
        await run_in_threadpool(write_mask_stl, mask_array, affine, files.mesh)
    return _file(files.mesh, "model/stl", f"{_stem(study)}-spine.stl")


@router.get("/seg.dcm", summary="DICOM SEG referencing the source series (DICOM input only)",
            responses=_binary("application/dicom"))
async def dicom_seg(study_id: str, user: CurrentUser, session: DbSession, services: Services) -> FileResponse:
    study, files = await run_in_threadpool(_finished, session, study_id, services, user, "seg.dcm")
    if study.input_kind != "dicom":
        raise HTTPException(404, f"the input was {study.input_kind}, not DICOM: there is no source series "
                                 "for a DICOM SEG to reference (download the NIfTI mask instead)")
    if not files.seg_dcm.is_file():
        mask_array, affine = await run_in_threadpool(_mask_array, files)
        series_uid = (study.summary or {}).get("series_uid")
        await run_in_threadpool(write_dicom_seg, mask_array, affine, Path(study.input_path), series_uid,
                                files.seg_dcm, model_id=study.model_id or "unknown")
    return _file(files.seg_dcm, "application/dicom", f"{_stem(study)}-seg.dcm")
