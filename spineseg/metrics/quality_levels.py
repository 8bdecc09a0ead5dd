"""Quality checks of the levels: per vertebra and for the column, from the levels' summaries
(``model.levels.VertebraLevel.summary`` with the ``anatomy`` measured by
``metrics.level_anatomy``). Pure functions on those dicts; thresholds in
``metrics.quality.QualityThresholds``.

- ``vertebra_checks``: one verdict per vertebra (ok / review / not assessable) with its reasons,
  and ``withhold``: whether its measurements must be withheld (any verdict but ok).
- ``level_checks``: findings for the whole column: bridged discs, vertebrae missing from a
  continuous column, left-right asymmetry. Without levels, one ``info`` finding says that these
  were not checked.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from spineseg.metrics.quality import THRESHOLDS, Finding, QualityThresholds

SACRUM = "sacrum"


def _anatomy(v: dict[str, Any]) -> dict[str, Any]:
    return v.get("anatomy") or {}


def _asymmetric(v: dict[str, Any], t: QualityThresholds, sides_cut: bool) -> float | None:
    """The vertebra's left-right reach ratio when it is over the limit (never where the column
    is cut in-plane: its sides are then the crop's)."""
    ratio = _anatomy(v).get("lr_extent_ratio")  # the sacrum too: its alae are as wide both ways (ts-abdomen 1.06)
    if not sides_cut and ratio is not None and ratio > t.max_lr_extent_ratio:
        return float(ratio)
    return None


def _bridged_below(v: dict[str, Any], t: QualityThresholds) -> float | None:
    fill = _anatomy(v).get("disc_fill_below")
    return float(fill) if fill is not None and fill >= t.bridged_disc_fill else None


def centre_gaps(vertebrae: list[dict[str, Any]]) -> list[float]:
    """Distances (mm) between consecutive vertebrae's centres, the sacrum left out (its centre
    lies far below the last disc)."""
    centres = [np.asarray(v["centroid_mm"], dtype=float) for v in vertebrae
               if v.get("name") != SACRUM and v.get("centroid_mm") is not None]
    return [float(np.linalg.norm(a - b)) for a, b in itertools.pairwise(centres)]


def wide_gaps(vertebrae: list[dict[str, Any]], t: QualityThresholds = THRESHOLDS) -> list[tuple[int, float]]:
    """(index of the upper vertebra, ratio) for each centre gap over ``max_gap_ratio`` times the
    mean of the gaps above and below it (needs a neighbouring gap)."""
    gaps = centre_gaps(vertebrae)
    out = []
    for i, gap in enumerate(gaps):
        around = [gaps[j] for j in (i - 1, i + 1) if 0 <= j < len(gaps)]
        if around and gap > t.max_gap_ratio * float(np.mean(around)):
            out.append((i, gap / float(np.mean(around))))
    return out


def vertebra_checks(vertebrae: list[dict[str, Any]], *, sides_cut: bool = False,
                    t: QualityThresholds = THRESHOLDS) -> list[dict[str, Any]]:
    """A verdict per vertebra from its levels summary: cut by the field of view, a volume no
    vertebra has, an uncertain name, a bridged disc above or below it, a missing vertebra next
    to it, or one side reaching far more than the other (not judged when ``sides_cut``: the
    column is cut in-plane). ``withhold`` is true for any verdict but ok: its measurements are
    then shown as withheld, with these reasons."""
    gap_after = dict(wide_gaps(vertebrae, t))
    named = [i for i, v in enumerate(vertebrae) if v.get("name") != SACRUM]
    out = []
    for index, v in enumerate(vertebrae):
        flags = _vertebra_flags(index, vertebrae, named, gap_after, t, sides_cut)
        verdict = ("not assessable" if any(level == "not assessable" for level, _ in flags)
                   else "review" if flags else "ok")
        out.append({"name": v.get("name"), "verdict": verdict, "reasons": [r for _, r in flags],
                    "withhold": verdict != "ok"})
    return out


def _vertebra_flags(index: int, vertebrae: list[dict[str, Any]], named: list[int], gap_after: dict[int, float],
                    t: QualityThresholds, sides_cut: bool) -> list[tuple[str, str]]:
    """(verdict level, reason) for each check vertebra ``index`` fails."""
    v = vertebrae[index]
    flags = []
    if not v.get("complete", True):
        flags.append(("not assessable", "cut by the edge of the image: its volume and heights are incomplete"))
    volume = v.get("volume_ml")
    if volume is not None and v.get("name") != SACRUM and not t.vertebra_min_ml <= volume <= t.vertebra_max_ml:
        flags.append(("review", f"{volume:.1f} mL, outside any vertebra's {t.vertebra_min_ml:.0f}-"
                                f"{t.vertebra_max_ml:.0f} mL: a fragment or vertebrae merged"))
    confidence = v.get("confidence")
    if v.get("verse_id") is not None and confidence is not None and confidence < t.vertebra_min_confidence:
        flags.append(("review", f"its name is uncertain (confidence {confidence:.2f})"))
    for side, neighbour in (("below", v), ("above", vertebrae[index - 1] if index > 0 else None)):
        fill = _bridged_below(neighbour, t) if neighbour is not None else None
        if fill is not None:
            flags.append(("review", f"the disc {side} it is marked as bone ({fill:.0%} covered): its endplate and "
                                    "heights cannot be read from the mask"))
    if index in named:
        position = named.index(index)
        for gap_index, side in ((position, "below"), (position - 1, "above")):
            if gap_index in gap_after:
                flags.append(("review", f"a vertebra seems missing {side} it (centres {gap_after[gap_index]:.1f} "
                                        "times farther apart than their neighbours'): names may be shifted"))
    ratio = _asymmetric(v, t, sides_cut)
    if ratio is not None:
        flags.append(("review", f"it reaches {ratio:.1f} times farther to one side than to the other: a rib or "
                                "other bone marked on one side, or one side's arch left out"))
    return flags


def level_checks(vertebrae: list[dict[str, Any]] | None, *, sides_cut: bool = False,
                 t: QualityThresholds = THRESHOLDS) -> list[Finding]:
    """Findings for the column from its levels: ``bridged_discs``, ``missing_levels`` and
    ``lr_asymmetry`` (not judged when ``sides_cut``); one ``info`` finding when no levels
    were computed."""
    if vertebrae is None:
        return [Finding("levels", "info", "levels were not computed: bridged discs, missing vertebrae and "
                        "left-right asymmetry were not checked")]
    bridged = ", ".join(str(v.get("name")) for v in vertebrae if _bridged_below(v, t) is not None)
    count = float(sum(_bridged_below(v, t) is not None for v in vertebrae))
    findings = [Finding("bridged_discs", t.bridged_status, f"the disc below {bridged} is marked as bone: the heights "
                        "of the vertebrae beside it are withheld", count) if bridged
                else Finding("bridged_discs", "ok", "every disc between the vertebrae is open", 0.0)]
    gaps = wide_gaps(vertebrae, t)
    named = [v for v in vertebrae if v.get("name") != SACRUM]
    if gaps:
        upper = named[gaps[0][0]].get("name")
        findings.append(Finding("missing_levels", "review",
                                f"a vertebra seems missing below {upper}: consecutive centres lie {gaps[0][1]:.1f} "
                                "times farther apart than their neighbours', so the names below may be shifted",
                                float(len(gaps))))
    else:
        findings.append(Finding("missing_levels", "ok" if len(named) >= 3 else "info",
                                "no vertebra missing from the column" if len(named) >= 3
                                else "too few vertebrae to tell whether one is missing", 0.0))
    lopsided = [str(v.get("name")) for v in vertebrae if _asymmetric(v, t, sides_cut) is not None]
    if lopsided:
        findings.append(Finding("lr_asymmetry", "review", f"{', '.join(lopsided)}: far more bone on one side than "
                                "on the other (a rib or other bone marked on one side, or one side's arch left "
                                "out)", float(len(lopsided))))
    else:
        findings.append(Finding("lr_asymmetry", "ok", "the vertebrae are left-right balanced", 0.0))
    return findings
