"""The one in-memory image type: a 3D array with its geometry and where it came from.

Conventions (those of nibabel / NIfTI):
- ``array`` has shape ``(I, J, K)``; for axial scans K is the slice axis.
- ``affine`` (4x4) maps voxel indices ``(i, j, k, 1)`` to world millimetres in RAS+
  (+x towards the patient's Right, +y Anterior, +z Superior). DICOM's LPS positions are
  converted on reading, so a Volume from DICOM and one from NIfTI share one world.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

Intensity = Literal["hu", "scaled"]


@dataclass(frozen=True)
class Provenance:
    """Where a volume came from.

    source: the path (or name) the caller gave.
    format: ``"dicom"``, ``"nifti"``, ``"image"``, ``"numpy"`` or ``"derived"``.
    intensity: ``"hu"`` when values are Hounsfield units; ``"scaled"`` when they are unknown
        grey levels that were mapped to HU by the paper's 12-bit rule (see ``imaging.slices``).
    series_uid / study_uid / modality: from DICOM, when known.
    notes: human-readable remarks made while reading (resampled gaps, reoriented, ...).
    """

    source: str
    format: str
    intensity: Intensity = "hu"
    series_uid: str | None = None
    study_uid: str | None = None
    modality: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Volume:
    """A 3D image: ``array`` (float32, shape (I, J, K); an unscaled integer NIfTI read with
    ``keep_integers`` keeps its stored int16/uint8 type), ``affine`` (4x4, voxel -> RAS+ mm)."""

    array: np.ndarray
    affine: np.ndarray
    provenance: Provenance = field(default_factory=lambda: Provenance("<memory>", "derived"))

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got shape {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (lengths of the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    def with_array(self, array: np.ndarray, **provenance_changes: object) -> Volume:
        """A volume on the same grid holding ``array`` (e.g. a mask or probabilities)."""
        prov = replace(self.provenance, **provenance_changes) if provenance_changes else self.provenance
        return Volume(array=array, affine=self.affine, provenance=prov)


@dataclass(frozen=True)
class LabelMap:
    """A spine label map on some grid.

    mask: uint8 binary spine mask, same shape as the volume it belongs to.
    vertebrae: int16 per-vertebra labels in VerSe numbering (1..7 C1..C7, 8..19 T1..T12,
        20..24 L1..L5, 25 L6, 26 sacrum, 28 T13) or ``None`` when the source had no levels.
    affine: voxel -> RAS+ mm.
    convention: the convention the source was read in (``binary``, ``totalsegmentator``,
        ``verse``, ``per-structure``).
    """

    mask: np.ndarray
    affine: np.ndarray
    convention: str
    vertebrae: np.ndarray | None = None
    source: str = "<memory>"
