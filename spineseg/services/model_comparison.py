"""Compare registry versions on a dataset's test cases: each version segments each case with
the full inference pipeline; per case the Dice against the truth, the predicted spine volume
and the segmentation time; per version mean Dice (overall and per site) and mean time;
against the first (reference) version, Bland-Altman agreement of the per-case Dice and the
mean difference in segmentation time.

The result is a JSON-ready dict; ``write_comparison_plots`` draws one Bland-Altman PNG per
compared version.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from spineseg.errors import InputError
from spineseg.imaging.io import load_labels, load_volume
from spineseg.metrics import dice
from spineseg.metrics.bland_altman import bland_altman
from spineseg.metrics.plots import plot_bland_altman
from spineseg.model.dataset import CaseSpec
from spineseg.model.inference import LoadedModel, segment
from spineseg.registry import Registry

log = logging.getLogger(__name__)

MAX_VERSIONS = 6


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(statistics.fmean(finite), 6) if finite else None


def compare_versions(registry: Registry, version_ids: list[str], cases: list[CaseSpec], *,
                     device: str = "auto") -> dict[str, Any]:
    """Segment every case with every version (see the module docstring).

    version_ids: 2..6 distinct registry ids; the first is the reference.
    cases: the cases to score (normally a dataset's ``test`` split), each with its truth.
    Raises ``InputError`` for fewer than two versions, a repeated id, or no cases;
    ``ModelNotFoundError`` for an unknown version.
    """
    if len(version_ids) < 2 or len(version_ids) > MAX_VERSIONS:
        raise InputError("versions", f"choose 2 to {MAX_VERSIONS} versions to compare, got {len(version_ids)}")
    if len(set(version_ids)) != len(version_ids):
        raise InputError("versions", "a version is named twice")
    if not cases:
        raise InputError("dataset", "the dataset has no test cases: put at least one patient in the test split")
    models = {v: LoadedModel.from_folder(registry.get(v).path, device) for v in version_ids}
    rows = []
    for spec in cases:
        volume = load_volume(spec.ct)
        truth = load_labels(spec.labels, volume, convention=spec.convention).mask
        row: dict[str, Any] = {"case": spec.name, "patient": spec.patient, "site": spec.site,
                               "truth_volume_ml": round(float(truth.sum()) * volume.voxel_volume_ml, 3),
                               "dice": {}, "volume_ml": {}, "seconds": {}}
        for version_id, model in models.items():
            started = time.perf_counter()
            result = segment(volume, model, device=device)
            row["seconds"][version_id] = round(time.perf_counter() - started, 4)
            row["dice"][version_id] = round(dice(result.mask, truth), 6)
            row["volume_ml"][version_id] = round(result.spine_volume_ml, 3)
        rows.append(row)
        log.info("compared %d versions on %s", len(models), spec.name)
    reference = version_ids[0]
    versions: dict[str, Any] = {}
    for version_id in version_ids:
        by_site: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            by_site[row["site"] or "(none)"].append(row["dice"][version_id])
        summary: dict[str, Any] = {
            "mean_dice": _mean([r["dice"][version_id] for r in rows]),
            "mean_seconds": _mean([r["seconds"][version_id] for r in rows]),
            "dice_by_site": {site: _mean(values) for site, values in sorted(by_site.items())},
        }
        if version_id != reference:
            differences = [r["seconds"][version_id] - r["seconds"][reference] for r in rows]
            summary["seconds_minus_reference"] = _mean(differences)
            summary["dice_minus_reference"] = _mean([r["dice"][version_id] - r["dice"][reference] for r in rows])
            summary["bland_altman_dice"] = (
                bland_altman([r["dice"][version_id] for r in rows], [r["dice"][reference] for r in rows]).summary()
                if len(rows) >= 2 else None)
        versions[version_id] = summary
    return {"reference": reference, "versions": versions, "cases": rows}


def write_comparison_plots(result: dict[str, Any], folder: Path) -> dict[str, Path]:
    """One Bland-Altman PNG (Dice of a version vs the reference) per non-reference version;
    none when there are fewer than two cases."""
    folder.mkdir(parents=True, exist_ok=True)
    reference, rows, plots = result["reference"], result["cases"], {}
    if len(rows) < 2:
        return plots
    for version_id in result["versions"]:
        if version_id == reference:
            continue
        stats = bland_altman([r["dice"][version_id] for r in rows], [r["dice"][reference] for r in rows])
        plots[version_id] = plot_bland_altman(stats, folder / f"bland-altman-{version_id}.png",
                                              title=f"Dice per case: {version_id} vs {reference}")
    return plots
