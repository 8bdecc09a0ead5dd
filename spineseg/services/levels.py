"""Levels as outputs: the per-vertebra label map, its summary with measurements, the viewer's
colour table and the measurement CSV. Pure steps live in ``model.levels`` and
``metrics.vertebra_measures``; this module only combines and writes them."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from spineseg.errors import InputError
from spineseg.imaging.nifti import write_nifti
from spineseg.metrics.height_gate import grade_vertebrae
from spineseg.metrics.level_anatomy import vertebra_anatomy
from spineseg.metrics.levels import named_only, score_levels
from spineseg.metrics.quality_levels import vertebra_checks
from spineseg.metrics.vertebra_measures import (
    FLAG_NOTE,
    axis_hints,
    density_flag,
    measure_vertebra,
)
from spineseg.model.level_ids import CONVENTIONS, colour_table
from spineseg.model.levels import Levels, vertebra_levels
from spineseg.services.stage_times import StageTimes

log = logging.getLogger(__name__)

CSV_COLUMNS = ("name", "verse_id", "confidence", "complete", "volume_ml", "hu_mean", "hu_median", "roi_ml",
               "height_anterior_mm", "height_middle_mm", "height_posterior_mm", "ha_hp", "hm_hp",
               "hp_neighbours", "genant_grade", "height_flag", "assessable", "not_assessable", "density_flag",
               "quality", "withheld")
# What a vertebra that fails its quality checks does not show (metrics.quality_levels): every
# measurement, and its name is shown as withheld (``shown_name``); its volume (what the mask holds)
# and confidence stay, beside the reason. Its label in the level map stays (the key of the priors,
# the corrections and the SEG's segments), so ``name`` keeps the level the model read.
WITHHELD_KEYS = ("hu_mean", "hu_median", "roi_ml", "height_anterior_mm", "height_middle_mm", "height_posterior_mm",
                 "ha_hp", "hm_hp", "hp_neighbours", "genant_grade", "height_flag", "density_flag")


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        choices = ", ".join(CONVENTIONS)
        raise InputError("--levels-convention", f"unknown convention {convention!r}; choose from {choices}")
    return convention


def shown_name(name: str, withheld: bool) -> str:
    """A vertebra's name as a reader sees it: its level, or for a vertebra that failed its
    quality checks "withheld (read as T7)": the level is not given as a finding, but the reader
    can still tell which vertebra of the image the row is (docs/quality.md, "Withheld names")."""
    return f"withheld (read as {name})" if withheld else str(name)


def withheld_labels(summary: dict[str, Any] | None) -> frozenset[int]:
    """The labels of a run's vertebrae (its summary's) whose measurements and name are withheld."""
    return frozenset(int(v["label"]) for v in (summary or {}).get("vertebrae") or []
                     if (v.get("measures") or {}).get("withheld") and v.get("label") is not None)


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def measurements(levels: Levels, ct: np.ndarray, affine: np.ndarray) -> list[dict[str, Any]]:
    """One row per vertebra (top to bottom): density and heights, flags, on the levels' grid.
    Height ratios and Genant grades only where the quality gate passes (``metrics.height_gate``):
    elsewhere ``assessable`` is false, ``not_assessable`` says why, and the grade is empty."""
    rows, measured = [], []
    top = max((v.label for v in levels.vertebrae), default=0)
    boxes = ndi.find_objects(levels.labels, max_label=top)  # each vertebra's box in one pass
    hints = axis_hints([v.centroid_mm for v in levels.vertebrae])
    for v, hint in zip(levels.vertebrae, hints, strict=True):
        box = boxes[v.label - 1]
        shift = np.eye(4)
        shift[:3, 3] = [b.start for b in box]
        m = measure_vertebra(levels.labels[box] == v.label, ct[box], affine @ shift,
                             corner=tuple(b.start for b in box), grid_shape=levels.labels.shape, axis_hint=hint)
        measured.append(m)
        rows.append({"name": v.name, "verse_id": v.verse_id, "confidence": round(v.confidence, 3),
                     "complete": v.complete, "volume_ml": round(v.volume_ml, 2),
                     "hu_mean": _rounded(m.hu_mean), "hu_median": _rounded(m.hu_median),
                     "roi_ml": round(m.roi_ml, 2),
                     "height_anterior_mm": _rounded(m.heights_mm[0]), "height_middle_mm": _rounded(m.heights_mm[1]),
                     "height_posterior_mm": _rounded(m.heights_mm[2]),
                     "density_flag": density_flag(v.name, m.hu_mean)})
    grades = grade_vertebrae([v.name for v in levels.vertebrae], measured)
    for row, grade in zip(rows, grades, strict=True):
        row.update({k: (_rounded(x, 3) if isinstance(x, float) else x) for k, x in grade.items()})
    # What the quality checks judge (left-right reach, the disc below): kept out of the CSV.
    anatomy = vertebra_anatomy(levels.labels, affine, [v.label for v in levels.vertebrae])
    for row, measured_anatomy in zip(rows, anatomy, strict=True):
        row["anatomy"] = measured_anatomy
    return rows


def withhold_failing(levels: Levels, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (in place) with each vertebra's quality verdict (``metrics.quality_levels``) as
    ``quality``; a vertebra that fails gets ``withheld`` (the reasons), no measurements
    (``WITHHELD_KEYS`` empty) and is not assessable for grading, with the same reasons."""
    judged = vertebra_checks([v.summary() | {"anatomy": row.get("anatomy")}
                              for v, row in zip(levels.vertebrae, rows, strict=True)])
    for row, verdict in zip(rows, judged, strict=True):
        row["quality"], row["withheld"] = verdict["verdict"], None
        row["shown_name"] = shown_name(row["name"], bool(verdict["withhold"]))
        if verdict["withhold"]:
            reason = "; ".join(verdict["reasons"])
            row.update(dict.fromkeys(WITHHELD_KEYS), withheld=reason, assessable=False,
                       not_assessable=row.get("not_assessable") or f"withheld: {reason}")
    return rows


def levels_summary(levels: Levels, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``vertebrae`` entries of the JSON summary and the naming notes beside them."""
    entries = []
    for v, row in zip(levels.vertebrae, rows, strict=True):
        entry = v.summary()
        entry["measures"] = {k: row.get(k) for k in CSV_COLUMNS if k not in entry and k not in ("name",)}
        if "anatomy" in row:
            entry["anatomy"] = row["anatomy"]
        entry["name_withheld"] = bool(row.get("withheld"))
        entry["shown_name"] = row.get("shown_name") or shown_name(entry["name"], entry["name_withheld"])
        entries.append(entry)
    return {"vertebrae": entries, "levels": {"named": levels.named, "anchors": levels.anchors,
                                             "reason": levels.reason, "flags_note": FLAG_NOTE}}


def compute_levels(mask: np.ndarray, ct: np.ndarray, affine: np.ndarray) -> tuple[Levels, list[dict[str, Any]]]:
    """The levels of ``mask`` and their measurement rows, those of a vertebra that fails its
    quality checks withheld (``withhold_failing``)."""
    levels = vertebra_levels(mask, ct, affine)
    return levels, withhold_failing(levels, measurements(levels, ct, affine))


def write_levels_nifti(levels: Levels, affine: np.ndarray, path: Path, convention: str = "verse") -> Path:
    return write_nifti(levels.in_convention(check_convention(convention)), affine, Path(path), dtype=np.int16)


def write_colour_table(levels: Levels, path: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """``levels_colours.json``: label -> name and RGB, for the viewer and legends; with ``rows``
    (``compute_levels``' rows) a withheld vertebra's name is its ``shown_name``."""
    labels = [v.label for v in levels.vertebrae]
    table = colour_table(labels)
    for entry, row in zip(table, rows, strict=True) if rows is not None else ():
        if row.get("withheld"):
            entry.update(name=row["shown_name"], name_withheld=True, withheld=row["withheld"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"convention": "verse", "labels": table}, indent=2) + "\n")
    return path


def write_measurements_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for row in rows:
            shown = {**row, "name": row.get("shown_name") or row["name"]}
            writer.writerow({k: "" if shown.get(k) is None else shown[k] for k in CSV_COLUMNS})
    return path


def _finite(value: Any) -> Any:
    """``value`` for JSON: nan/inf -> ``None``, numpy scalars as Python, dicts and lists through."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def level_scores(levels: Levels, truth_levels: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Scores of ``levels`` against a per-vertebra truth on the same grid (VerSe ids): per-vertebra
    Dice, identified or not, the identification rate and localisation distance
    (``metrics.levels``), JSON-safe. Unnamed vertebrae claim no level, so they score nothing."""
    return label_map_scores(levels.labels, truth_levels, affine, named=levels.named)


def label_map_scores(labels: np.ndarray, truth_levels: np.ndarray, affine: np.ndarray, *,
                     named: bool) -> dict[str, Any]:
    """``level_scores`` of a stored level map (a run's levels.nii.gz) and whether it was named."""
    scores = score_levels(named_only(labels), truth_levels, affine).summary()
    scores["identified"] = sum(bool(e["identified"]) for e in scores["per_vertebra"].values())
    scores["named"] = named
    return _finite(scores)


def write_run_levels(mask: np.ndarray, ct: np.ndarray, affine: np.ndarray, files: Any,
                     truth_levels: np.ndarray | None = None) -> dict[str, Any]:
    """A run's level outputs (``files``: a ``store.files.RunFiles``): levels.nii.gz, the colour
    table, vertebrae.csv; returns the summary's ``vertebrae`` and ``levels`` parts, and
    ``level_scores`` when a per-vertebra truth (VerSe ids on the same grid) is given."""
    return run_levels(mask, ct, affine, files, truth_levels)[1]


def run_levels(mask: np.ndarray, ct: np.ndarray, affine: np.ndarray, files: Any,
               truth_levels: np.ndarray | None = None, times: StageTimes | None = None,
               ) -> tuple[Levels, dict[str, Any]]:
    """``write_run_levels`` that also returns the levels (for the exports that follow) and adds
    its stages to ``times``: ``levels_measurements`` (with writing them) and ``score_levels``."""
    times = times or StageTimes()
    with times.stage("levels_measurements"):
        levels, rows = compute_levels(mask, ct, affine)
        write_levels_nifti(levels, affine, files.levels)
        write_colour_table(levels, files.levels_colours, rows)
        write_measurements_csv(rows, files.vertebrae_csv)
        facts = levels_summary(levels, rows)
    if truth_levels is not None and np.any(truth_levels > 0):
        with times.stage("score_levels"):
            facts["level_scores"] = level_scores(levels, truth_levels, affine)
    return levels, facts
