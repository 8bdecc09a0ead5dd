"""Level scores across evaluated studies whose truth names every vertebra: per case the
per-vertebra Dice and whether each vertebra was identified (VerSe definition, computed by the
segment job with ``metrics.levels`` and stored in the run's summary as ``level_scores``), pooled
over the cases, and as CSV. Reads what the job stored; computes nothing from images again."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from spineseg.model.level_ids import CRANIOCAUDAL, VERSE_BY_NAME
from spineseg.services.evaluation import CaseRow

CSV_COLUMNS = ("study_id", "name", "model_version", "run_id", "vertebra", "dice", "identified", "distance_mm")


def _order(name: str) -> int:
    """Head to foot (T13 after T12, L6 after L5); unknown names last."""
    verse = VERSE_BY_NAME.get(name)
    return CRANIOCAUDAL.index(verse) if verse in CRANIOCAUDAL else len(CRANIOCAUDAL)


def leveled(rows: Sequence[CaseRow]) -> list[CaseRow]:
    """The cases whose run was scored against a per-vertebra truth."""
    return [row for row in rows if row.levels]


def levels_overview(rows: Sequence[CaseRow]) -> dict[str, Any] | None:
    """Pooled over the cases with level scores: vertebrae identified / true, the mean of the
    per-case identification rates and localisation distances, and per vertebra name the number
    of cases holding it, how many identified it and its mean Dice. ``None`` when no case has them."""
    scored = leveled(rows)
    if not scored:
        return None
    per_name: dict[str, dict[str, Any]] = {}
    for row in scored:
        for name, entry in row.levels["per_vertebra"].items():
            item = per_name.setdefault(name, {"cases": 0, "identified": 0, "dice": []})
            item["cases"] += 1
            item["identified"] += int(bool(entry.get("identified")))
            if entry.get("dice") is not None:
                item["dice"].append(float(entry["dice"]))
    rates = [float(r.levels["identification_rate"]) for r in scored if r.levels.get("identification_rate") is not None]
    local = [float(r.levels["localisation_mm"]) for r in scored if r.levels.get("localisation_mm") is not None]
    return {
        "cases": len(scored),
        "true_vertebrae": sum(int(r.levels["true_vertebrae"]) for r in scored),
        "identified": sum(int(r.levels.get("identified", 0)) for r in scored),
        "mean_identification_rate": sum(rates) / len(rates) if rates else None,
        "mean_localisation_mm": sum(local) / len(local) if local else None,
        "per_vertebra": {name: {"cases": v["cases"], "identified": v["identified"],
                                "mean_dice": sum(v["dice"]) / len(v["dice"]) if v["dice"] else None}
                         for name, v in sorted(per_name.items(), key=lambda kv: _order(kv[0]))},
    }


def vertebra_names(rows: Sequence[CaseRow]) -> list[str]:
    """Every true vertebra name among the cases, head to foot (the page's columns)."""
    names = {name for row in leveled(rows) for name in row.levels["per_vertebra"]}
    return sorted(names, key=_order)


def levels_csv(rows: Sequence[CaseRow]) -> str:
    """CSV: one line per case and true vertebra (Dice, identified yes/no, centroid distance)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in leveled(rows):
        for name in sorted(row.levels["per_vertebra"], key=_order):
            entry = row.levels["per_vertebra"][name]
            distance = entry.get("distance_mm")
            dice = entry.get("dice")
            writer.writerow([row.study_id, row.name, row.model_version or "", row.run_id or "", name,
                             "" if dice is None or not math.isfinite(dice) else dice,
                             "yes" if entry.get("identified") else "no", "" if distance is None else distance])
    return buffer.getvalue()
