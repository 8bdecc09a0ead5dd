"""Evaluation across studies that came with a ground truth: the per-case table, mean and SD
of each metric, Bland-Altman agreement of the spine volume (prediction vs truth), box plots
and CSV. Reads the metrics each segment job stored; computes nothing from images again."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spineseg.metrics.bland_altman import BlandAltmanStats, bland_altman
from spineseg.metrics.evaluate import METRIC_KEYS

TABLE_KEYS = ("dice", "iou", "precision", "recall", "specificity", "f1", "hd95_mm", "assd_mm",
              "surface_dice_1mm", "surface_dice_2mm", "signed_surface_distance_mm", "interior_recall",
              "volume_pred_ml", "volume_truth_ml", "abs_volume_diff_ml", "tp", "fp", "tn", "fn")
BOX_KEYS = ("dice", "iou", "precision", "recall", "f1")


@dataclass(frozen=True)
class CaseRow:
    """One evaluated study: its id, a display name, the stored metrics (``None`` = undefined)
    and the run they come from (its id, the model version that made it, the study's site), and
    the run's per-vertebra level scores when its truth has levels (``services.evaluation_levels``)."""

    study_id: str
    name: str
    metrics: dict[str, float | int | None]
    model_version: str | None = None
    run_id: str | None = None
    site: str = ""
    levels: dict[str, Any] | None = None  # the run's level scores, where its truth names each vertebra
    quality: str | None = None  # the run's quality verdict (services.quality); None: made before the checks
    truth: str = "upload"  # what the metrics are measured against: "upload" or "correction v<N>"
    effort: dict[str, Any] | None = None  # that correction's effort (voxels changed, levels renamed, seconds)
    in_training: bool = False  # the run's model version saw this study (or its patient) in training


def _defined(rows: Sequence[CaseRow], key: str) -> np.ndarray:
    values = [row.metrics.get(key) for row in rows]
    return np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)


def mean_and_sd(rows: Sequence[CaseRow]) -> dict[str, tuple[float | None, float | None]]:
    """Per metric: mean and sample SD (``ddof=1``) over the cases where it is defined;
    ``None`` where no case defines it (SD also ``None`` with a single case)."""
    result: dict[str, tuple[float | None, float | None]] = {}
    for key in METRIC_KEYS:
        values = _defined(rows, key)
        mean = float(values.mean()) if values.size else None
        sd = float(values.std(ddof=1)) if values.size > 1 else None
        result[key] = (mean, sd)
    return result


def _volume_pairs(rows: Sequence[CaseRow]) -> list[tuple[CaseRow, float, float]]:
    pairs = [(row, row.metrics.get("volume_pred_ml"), row.metrics.get("volume_truth_ml")) for row in rows]
    return [(row, float(a), float(b)) for row, a, b in pairs if a is not None and b is not None]


def volume_agreement(rows: Sequence[CaseRow]) -> BlandAltmanStats | None:
    """Bland-Altman of predicted vs true spine volume (mL); ``None`` with fewer than 2 cases."""
    pairs = _volume_pairs(rows)
    if len(pairs) < 2:
        return None
    _rows, predicted, truth = zip(*pairs, strict=True)
    return bland_altman(predicted, truth)


def agreement_points(rows: Sequence[CaseRow]) -> list[dict[str, object]]:
    """The Bland-Altman points, each named by its study (the order of ``volume_agreement``)."""
    return [{"study_id": row.study_id, "name": row.name, "model_version": row.model_version,
             "mean_ml": (a + b) / 2, "difference_ml": a - b} for row, a, b in _volume_pairs(rows)]


def agreement_labels(rows: Sequence[CaseRow]) -> list[str]:
    """The names of the Bland-Altman points, for the plot."""
    return [row.name for row, _a, _b in _volume_pairs(rows)]


def write_box_plot(rows: Sequence[CaseRow], path: Path) -> Path:
    """Box plots of the overlap metrics (0..1) across cases, one box per metric, as PNG."""
    figure = Figure(figsize=(7.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    data = [_defined(rows, key) for key in BOX_KEYS]
    axes.boxplot([d if d.size else np.array([np.nan]) for d in data], tick_labels=list(BOX_KEYS))
    axes.set_ylim(0, 1.02)
    axes.set_ylabel("value")
    axes.set_title(f"Overlap metrics across {len(rows)} case(s)")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


TRUTH_COLUMNS = ("truth", "correction_voxels_changed", "correction_share_changed", "correction_levels_renamed",
                 "correction_edit_s", "in_training")


def _truth_cells(row: CaseRow) -> list[object]:
    """What a row is measured against: the truth (upload or correction vN), that correction's
    effort (blank for an upload, or a figure not recorded), and whether the run's model version
    saw the study in training."""
    effort = row.effort or {}
    cells = [effort.get(key) for key in ("voxels_changed", "share_changed", "levels_renamed", "edit_seconds")]
    return [row.truth, *("" if c is None else c for c in cells), "yes" if row.in_training else "no"]


def table_csv(rows: Sequence[CaseRow], exclude_training: bool = False) -> str:
    """CSV: one line per case (study id, name, site, model version and run, the run's quality
    verdict, every metric, then the truth columns of ``_truth_cells``), then ``mean`` and ``sd``
    lines (over the cases not seen in training when ``exclude_training``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study_id", "name", "site", "model_version", "run_id", "quality", *METRIC_KEYS, *TRUTH_COLUMNS])
    for row in rows:
        writer.writerow([row.study_id, row.name, row.site, row.model_version or "", row.run_id or "",
                         row.quality or "not run",
                         *("" if row.metrics.get(k) is None else row.metrics[k] for k in METRIC_KEYS),
                         *_truth_cells(row)])
    summary = mean_and_sd([r for r in rows if not (exclude_training and r.in_training)])
    for label, index in (("mean", 0), ("sd", 1)):
        writer.writerow([label, "", "", "", "", "",
                         *("" if summary[k][index] is None else summary[k][index] for k in METRIC_KEYS),
                         *[""] * len(TRUTH_COLUMNS)])
    return buffer.getvalue()
