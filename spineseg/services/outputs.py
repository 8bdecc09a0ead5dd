"""What a segmentation produces on disk: the NIfTI mask, overlay images and a JSON summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spineseg.imaging.nifti import write_nifti
from spineseg.imaging.overlay import write_overlays
from spineseg.imaging.resample import canonical_transform, canonical_view
from spineseg.model.inference import Segmentation
from spineseg.services.quality import assess_run


def write_mask(segmentation: Segmentation, path: Path) -> Path:
    """uint8 NIfTI on the input grid with the input's affine (aligns over the CT in any viewer)."""
    return write_nifti(segmentation.mask.astype(np.uint8, copy=False), segmentation.volume.affine, path, dtype=np.uint8)


def summary(segmentation: Segmentation) -> dict[str, Any]:
    """Spine volume (mL), axial slices that contain spine (along the patient's inferior-superior
    axis whatever the file's storage order, 0 = most inferior, as the overlay images count them),
    model, timings, and how the network ran (device, number format and why that format)."""
    volume = segmentation.volume
    ornt, _affine = canonical_transform(volume.affine, volume.shape)
    axial = canonical_view(segmentation.mask, ornt)
    slices = np.flatnonzero(axial.any(axis=(0, 1))).tolist()
    prov = volume.provenance
    return {
        "source": prov.source,
        "format": prov.format,
        "intensity": prov.intensity,
        "shape": list(volume.shape),
        "spacing_mm": [round(s, 4) for s in volume.spacing],
        "spine_volume_ml": round(segmentation.spine_volume_ml, 3),
        "slices_with_spine": slices,
        "slices_with_spine_count": len(slices),
        "axial_slice_count": int(axial.shape[2]),
        "model_id": segmentation.model_id,
        "timings_s": {k: round(v, 4) for k, v in segmentation.timings.items()},
        "inference": dict(segmentation.inference),
        "notes": list(prov.notes),
    }


def write_summary(segmentation: Segmentation, path: Path, extra: dict[str, Any] | None = None) -> Path:
    data = summary(segmentation) | (extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_all(segmentation: Segmentation, out_dir: Path, *, overlays: bool = True) -> dict[str, Path]:
    """The standard output folder: mask.nii.gz, summary.json (with the quality verdict, as a
    web run's), overlays/slice_*.png."""
    quality = assess_run(segmentation.volume, segmentation.mask)
    out = {"mask": write_mask(segmentation, out_dir / "mask.nii.gz"),
           "summary": write_summary(segmentation, out_dir / "summary.json", {"quality": quality})}
    if overlays:
        write_overlays(segmentation.volume, segmentation.mask, out_dir / "overlays")
        out["overlays"] = out_dir / "overlays"
    return out
