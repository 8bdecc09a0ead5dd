"""Training datasets: labelled CT cases preprocessed once into one HDF5 file.

Layout of the file::

    /                    attrs: spacing_mm, seed, manifest (JSON), content_sha256, split (JSON)
    /cases/<name>/image  int16 (I, J, K) HU, RAS order, at the dataset spacing
    /cases/<name>/mask   uint8 (I, J, K) binary spine
    /cases/<name>/valid  uint8 (K,) 1 where the slice's labels can be trusted
                         attrs: patient, site, split, ct, labels, convention, partial

Which slices are valid: labels are trusted inside the labelled span along the slice axis; past
its ends only when the end is anatomical (the sacrum below, C1 above), because a scan may show
vertebrae the labeller left out. A case marked ``partial`` (only some vertebrae labelled, e.g.
ts-cta-crop's T12) keeps only the central 60% of its labelled span, where no other vertebra
shares the slice. Training never re-reads DICOM: it samples from this file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from spineseg.errors import InputError
from spineseg.imaging.io import load_labels, load_volume
from spineseg.imaging.labels import VERSE_SACRUM
from spineseg.imaging.resample import labels_onto_grid, resample_to_spacing, to_canonical

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
HU_RANGE = (-1024, 3071)


@dataclass(frozen=True)
class CaseSpec:
    """One labelled case. ``split`` may be preset (else the seeded patient split decides)."""

    name: str
    ct: str
    labels: str
    patient: str
    site: str = ""
    convention: str = "auto"
    split: str = ""
    partial: bool = False


def read_manifest(path: Path) -> list[CaseSpec]:
    """A CSV with columns name, ct, labels, patient[, site, convention, split, partial]; relative
    paths are taken from the manifest's folder."""
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read manifest ({exc})") from exc
    required = {"name", "ct", "labels", "patient"}
    if not rows or not required <= set(rows[0]):
        raise InputError(path, f"manifest needs the columns {sorted(required)}")
    specs = []
    for row in rows:
        def local(p: str) -> str:
            return str((path.parent / p).resolve()) if not Path(p).is_absolute() else p

        specs.append(CaseSpec(
            name=row["name"], ct=local(row["ct"]), labels=local(row["labels"]), patient=row["patient"],
            site=row.get("site") or "", convention=row.get("convention") or "auto",
            split=row.get("split") or "", partial=(row.get("partial") or "").lower() in {"1", "true", "yes"},
        ))
    return specs


def discover_case(folder: Path) -> CaseSpec:
    """A case folder holding a CT (``ct.nii.gz``, ``*_ct.nii.gz`` or ``dicom/``) and labels
    (``labels*.nii.gz``, ``*seg-vert*``, or ``vertebrae_*.nii.gz`` files). Patient = folder name."""
    candidates_ct = [folder / "ct.nii.gz", *sorted(folder.glob("*_ct.nii.gz")), folder / "dicom"]
    ct = next((c for c in candidates_ct if c.exists()), None)
    labels = next(
        (c for c in [folder / "labels.nii.gz", *sorted(folder.glob("labels*.nii.gz")),
                     *sorted(folder.glob("*seg-vert*.nii.gz"))] if c.exists()),
        None,
    )
    if labels is None and list(folder.glob("vertebrae_*.nii.gz")):
        labels = folder
    if ct is None or labels is None:
        raise InputError(folder, "case folder needs a CT (ct.nii.gz, *_ct.nii.gz or dicom/) and labels")
    return CaseSpec(name=folder.name, ct=str(ct), labels=str(labels), patient=folder.name)


def split_by_patient(specs: list[CaseSpec], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Patient -> split. Preset splits win; the rest are shuffled with ``seed`` and dealt by
    ``fractions`` (train, val, test), each count rounded, then:

    - at least one patient trains (val and test give way, test first);
    - at least one patient validates when ``fractions[1] > 0`` and that still leaves one to train
      (so two patients are one train + one val, never two train and an empty validation);
    - test gets only what its fraction rounds to (3 patients at 0.7/0.15/0.15: 2 train, 1 val).
    """
    preset: dict[str, str] = {}
    for spec in specs:
        if spec.split:
            if spec.split not in SPLITS:
                raise InputError(spec.name, f"split {spec.split!r} is not one of {SPLITS}")
            if preset.get(spec.patient, spec.split) != spec.split:
                raise InputError(spec.name, f"patient {spec.patient} is assigned to two splits")
            preset[spec.patient] = spec.split
    free = sorted({s.patient for s in specs} - set(preset))
    random.Random(seed).shuffle(free)
    n = len(free)
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    trains_already = "train" in preset.values()
    if fractions[1] > 0 and n_val == 0 and "val" not in preset.values() and n >= (1 if trains_already else 2):
        n_val = 1  # an empty validation split means a version registered without validation metrics
    while n and n - n_val - n_test < (0 if trains_already else 1):  # keep at least one patient for training
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    result = dict(preset)
    for i, patient in enumerate(free):
        result[patient] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return result


def valid_slices(levels: np.ndarray | None, mask: np.ndarray, *, partial: bool) -> np.ndarray:
    """Per-slice trust flags along axis 2 (see the module docstring)."""
    n = mask.shape[2]
    valid = np.zeros(n, dtype=np.uint8)
    has_spine = np.flatnonzero(mask.any(axis=(0, 1)))
    if has_spine.size == 0:
        return valid
    low, high = int(has_spine[0]), int(has_spine[-1])
    if partial:
        span = high - low + 1
        trim = round(span * 0.2)
        valid[low + trim: high - trim + 1] = 1
        return valid
    valid[low: high + 1] = 1
    if levels is not None:
        if np.any(levels[:, :, low] == VERSE_SACRUM):
            valid[:low] = 1
        if np.any(levels[:, :, high] == 1):
            valid[high + 1:] = 1
    return valid


def _prepare_case(spec: CaseSpec, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    volume = load_volume(spec.ct)
    labels = load_labels(spec.labels, volume, convention=spec.convention)
    if not labels.mask.any():
        raise InputError(spec.labels, "label map has no spine labels on this CT")
    canonical, _ = to_canonical(volume)
    resampled = resample_to_spacing(canonical, spacing)
    levels_src = labels.vertebrae if labels.vertebrae is not None else labels.mask.astype(np.int16)
    levels, _ = labels_onto_grid(levels_src, volume.affine, resampled.shape, resampled.affine)
    mask = (levels > 0).astype(np.uint8)
    image = np.clip(np.rint(resampled.array), *HU_RANGE).astype(np.int16)
    valid = valid_slices(levels if labels.vertebrae is not None else None, mask, partial=spec.partial)
    return image, mask, valid


def build_dataset(
    specs: list[CaseSpec],
    out: Path,
    *,
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.5),
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    progress=None,
) -> Path:
    """Preprocess every case into ``out`` (HDF5), written to a temp file and renamed at the end."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError("cases", "case names must be unique")
    split = split_by_patient(specs, seed, fractions)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    digest = hashlib.sha256()
    try:
        with h5py.File(tmp, "w") as h5:
            for i, spec in enumerate(specs):
                image, mask, valid = _prepare_case(spec, spacing)
                group = h5.create_group(f"cases/{spec.name}")
                group.create_dataset("image", data=image, compression="gzip", compression_opts=1)
                group.create_dataset("mask", data=mask, compression="gzip", compression_opts=1)
                group.create_dataset("valid", data=valid)
                group.attrs.update({"patient": spec.patient, "site": spec.site, "split": split[spec.patient],
                                    "ct": spec.ct, "labels": spec.labels, "convention": spec.convention,
                                    "partial": spec.partial})
                for array in (image, mask, valid):
                    digest.update(np.ascontiguousarray(array).tobytes())
                log.info("case %s: %s slices (%d valid), split %s", spec.name, image.shape, int(valid.sum()),
                         split[spec.patient])
                if progress:
                    progress((i + 1) / len(specs), spec.name)
            manifest = [asdict(s) | {"split": split[s.patient]} for s in specs]
            h5.attrs.update({"spacing_mm": list(spacing), "seed": seed, "manifest": json.dumps(manifest),
                             "content_sha256": digest.hexdigest(), "split": json.dumps(split)})
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@dataclass
class CaseArrays:
    name: str
    patient: str
    split: str
    image: np.ndarray
    mask: np.ndarray
    valid: np.ndarray


def load_dataset(path: Path) -> tuple[dict, list[CaseArrays]]:
    """The dataset's attributes (spacing, manifest, hash, split) and every case in memory."""
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"not a SpineSeg dataset file ({exc})") from exc
    with h5:
        if "cases" not in h5:
            raise InputError(path, "not a SpineSeg dataset file (no /cases group)")
        attrs = {
            "spacing_mm": tuple(float(v) for v in h5.attrs["spacing_mm"]),
            "seed": int(h5.attrs["seed"]),
            "manifest": json.loads(h5.attrs["manifest"]),
            "content_sha256": str(h5.attrs["content_sha256"]),
            "split": json.loads(h5.attrs["split"]),
        }
        cases = [
            CaseArrays(name, str(g.attrs["patient"]), str(g.attrs["split"]), g["image"][...], g["mask"][...],
                       g["valid"][...])
            for name, g in h5["cases"].items()
        ]
    return attrs, cases
