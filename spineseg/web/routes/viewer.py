"""The result page viewer's files: the study's CT and the current run's label maps as viewer
copies (canonical grid, cropped to the body, int16/uint8; see ``services.viewer_files``), sent
gzip-encoded so the browser inflates them natively, and the surfaces for the 3D view.

Each exists for the current run (``/api/studies/<id>/viewer/...``) and for any run
(``/api/studies/<id>/runs/<run id>/viewer/...``); the page reads the URLs from data attributes,
so a page showing another run points the viewer at that run's copies."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from spineseg.errors import InputError
from spineseg.imaging.nifti import open_nifti
from spineseg.imaging.viewer_copy import CropBox
from spineseg.services import viewer_files
from spineseg.services.mesh import write_mask_stl
from spineseg.services.uncertainty import UNCERTAINTY_FILE
from spineseg.store.files import RunFiles, StudyFiles
from spineseg.web.deps import Services
from spineseg.web.routes.downloads import RunTarget, _binary, chosen_target, current_target

router = APIRouter(prefix="/api/studies/{study_id}", tags=["viewer"])

VIEWER_NIFTI = "application/octet-stream"
LABEL_FILES = {"mask.nii": "mask", "truth.nii": "truth_on_grid", "levels.nii": "levels"}  # -> RunFiles attribute
OUTLINE = "-outline.nii"  # mask-outline.nii: only the label's one-voxel shell
# Maps of values rather than labels: copied on the same grid, never as an outline.
VALUE_FILES = {"uncertainty.nii": UNCERTAINTY_FILE}  # -> file in the run's folder (percent, uint8)


def _gzip_encoded(path: Path, name: str, extra: dict[str, str] | None = None) -> FileResponse:
    """A gzip file sent as its inflated content (``Content-Encoding: gzip``); the inflated size
    travels in ``X-Decoded-Length`` for progress bars."""
    return FileResponse(path, media_type=VIEWER_NIFTI, filename=name, headers={
        "Content-Encoding": "gzip", "X-Decoded-Length": str(viewer_files.decoded_size(path))} | (extra or {}))


def _study_root(services: Services, target: RunTarget) -> Path:
    return StudyFiles.of(services.settings.studies_dir, target.study.id).root


Step = Annotated[int, Query(ge=1, le=max(viewer_files.PREVIEW_STEPS),
                            description="1: every voxel; n: every n-th voxel along each axis (a quick first view)")]


def _ct_copy(root: Path, files: RunFiles, step: int) -> tuple[Path, CropBox]:
    if not files.ct.is_file():
        raise HTTPException(404, "the CT is missing from the run's outputs")
    return viewer_files.ct_copy(root, files.ct, [files.mask, files.truth_on_grid], step=step)


def _label_copy(root: Path, files: RunFiles, name: str, step: int) -> Path:
    as_outline = name.endswith(OUTLINE)
    key = name.removesuffix(OUTLINE) + ".nii" if as_outline else name
    if key in VALUE_FILES and not as_outline:
        label_path = files.folder / VALUE_FILES[key]
        if not label_path.is_file():
            raise HTTPException(404, f"{key} is not among this run's outputs (a run made before the uncertainty map)")
        return viewer_files.label_copy(root, files.ct, label_path, step=step)
    if key not in LABEL_FILES:
        names = sorted([*LABEL_FILES, *(n.removesuffix(".nii") + OUTLINE for n in LABEL_FILES), *VALUE_FILES])
        raise HTTPException(404, f"no viewer file {name!r}: one of {', '.join(names)}")
    label_path: Path = getattr(files, LABEL_FILES[key])
    if not label_path.is_file():
        raise HTTPException(404, f"{key} is not among this run's outputs")
    return viewer_files.label_copy(root, files.ct, label_path, as_outline=as_outline, step=step)


def _write_surface(label_path: Path, target: Path) -> None:
    image = open_nifti(label_path)
    try:
        write_mask_stl(np.asarray(image.dataobj) > 0, image.affine, target)
    except InputError as exc:
        raise HTTPException(404, exc.reason) from exc


def _surface(files: RunFiles, name: str) -> Path:
    label_path: Path = getattr(files, LABEL_FILES[f"{name}.nii"])
    if not label_path.is_file():
        raise HTTPException(404, f"{name} is not among this run's outputs")
    target = label_path.parent / viewer_files.VIEWER_DIR / f"{name}.stl"
    if not target.is_file() or target.stat().st_mtime < label_path.stat().st_mtime:
        _write_surface(label_path, target)
    return target


def add_viewer_routes(prefix: str, target_of: Callable[..., RunTarget], whose: str) -> None:
    """The viewer's files at ``prefix + /viewer/...``, the run chosen by ``target_of``."""
    Target = Annotated[RunTarget, Depends(target_of)]

    @router.get(prefix + "/viewer/ct.nii", summary=f"The CT for the viewer (RAS grid cropped to the body, int16 "
                f"HU, gzip-encoded) of {whose}", responses=_binary(VIEWER_NIFTI))
    async def ct(target: Target, services: Services, step: Step = 1) -> FileResponse:
        path, box = await run_in_threadpool(_ct_copy, _study_root(services, target), target.files, step)
        return _gzip_encoded(path, "ct.nii", {"X-Crop-Start": ",".join(map(str, box.start)),
                                              "X-Canonical-Shape": ",".join(map(str, box.canonical_shape))})

    @router.get(prefix + "/viewer/{name}", summary=f"A label map for the viewer (mask.nii, truth.nii, or "
                f"mask-outline.nii, truth-outline.nii: the labels' shells; uncertainty.nii: the probability "
                f"margin in percent) on the viewer CT's grid, uint8, "
                f"gzip-encoded, of {whose}", responses=_binary(VIEWER_NIFTI))
    async def label(name: str, target: Target, services: Services, step: Step = 1) -> FileResponse:
        path = await run_in_threadpool(_label_copy, _study_root(services, target), target.files, name, step)
        return _gzip_encoded(path, name)

    @router.get(prefix + "/viewer/surface/{name}.stl", summary=f"The surface of the mask or the truth (binary STL, "
                f"RAS mm) of {whose}", responses=_binary("model/stl"))
    async def surface(name: str, target: Target) -> FileResponse:
        if f"{name}.nii" not in LABEL_FILES:
            raise HTTPException(404, f"no surface {name!r}: mask or truth")
        path = await run_in_threadpool(_surface, target.files, name)
        return FileResponse(path, media_type="model/stl", filename=f"{name}.stl")


add_viewer_routes("", current_target, "the study's current run")
add_viewer_routes("/runs/{run_id}", chosen_target, "one run")
