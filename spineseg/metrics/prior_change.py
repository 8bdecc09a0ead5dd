"""The change since a prior study, per vertebra: a pure function of two runs' measurements (the
``vertebrae`` entries of their summaries, as ``services.levels.levels_summary`` writes them).

``compare_with_prior(prior_summary, current_summary, interval_days=...)`` -> ``PriorComparison``
(``.to_json()`` for the API, the CSV, the page and the reports).

Matching (each step says why when it refuses a vertebra):
1. By level: a vertebra is compared only when both runs name it (a VerSe id, confidence at least
   ``MIN_NAME_CONFIDENCE`` of ``model.levels``: below it the name is withdrawn). The same name
   in both runs is a candidate pair.
2. By position: the prior's centroids are aligned on the current run's by a rigid fit (Kabsch,
   least squares) on the *other* matched levels nearest along the spine (up to
   ``ALIGN_NEIGHBOURS``; one neighbour: a translation), so a different table position, field of
   view or posture does not count as a mismatch. The vertebra's own centroid, carried over by
   that fit, must land within ``POSITION_SHARE`` of the local spacing between vertebrae (the mean
   distance to its neighbours' centroids in the current run) of where the current run has it; a
   name that slipped by one level lands a whole spacing away. Two passes: pairs that fail the
   first are left out of the others' fits in the second. A shift of every name by the same
   level in both runs moves the whole column together and cannot be seen by this check.
3. A vertebra whose heights grew by more than the measurement error gets no flag: adult
   vertebrae do not grow, so the pair is two different vertebrae or a failed measurement.
4. A vertebra cut by either scan's edge is not compared (its centroid, heights and HU are
   those of the part in view) and is no reference for the others' positions. Heights and
   grades are compared only where both runs pass the measurement gate
   (``metrics.height_gate``: ``assessable``); trabecular HU where both runs read a trabecular
   ROI in a vertebra the scan does not cut, on images in Hounsfield units. A run whose quality
   verdict is "not assessable" is compared nowhere.

Flags (each a published definition applied to these measurements, not a diagnosis):
- incident fracture: Genant semi-quantitative grade 0 in the prior, 1 or more now; progression:
  a vertebra graded 1 or more in the prior with a higher grade now (grades from the height
  ratios, Genant et al., J Bone Miner Res 1993;8:1137-1148, as ``metrics.vertebra_measures``);
- incident deformity: a loss of at least ``HEIGHT_LOSS_SHARE`` and at least ``HEIGHT_LOSS_MM`` in
  any of the three heights (the Fracture Intervention Trial's morphometric definition of a new
  vertebral fracture: Black et al., Lancet 1996;348:1535-1541);
- height and grade flags only where a height also fell by more than
  ``HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM``, the least significant change of our own height
  measurement (measured as below; not part of the published definitions, which assume a reader's
  precision on radiographs);
- density loss: the trabecular HU fell by more than ``HU_LEAST_SIGNIFICANT_CHANGE``, the least
  significant change (2.77 x the precision error, 95 % confidence for the difference of two
  measurements; Gluer et al., Osteoporos Int 1995;5:262-270) of the precision error that
  ``bench/prior_repeatability.py`` measured (docs/levels.md, "Change since a prior").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spineseg.model.levels import MIN_NAME_CONFIDENCE

HEIGHT_KEYS = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")
HEIGHT_SIDES = ("anterior", "middle", "posterior")
# Black et al. 1996 (FIT): a new vertebral fracture is a decrease of 20 % and at least 4 mm in at
# least one vertebral height between two radiographs.
HEIGHT_LOSS_SHARE = 0.20
HEIGHT_LOSS_MM = 4.0
# The least significant change: 2.77 x the precision SD (root mean square over vertebrae) of repeat
# measurements of the same scans under another field of view (cropped at an end, the front or the
# sides, re-sampled half a voxel off, the table elsewhere), measured by
# ``python bench/prior_repeatability.py`` on P1 (3 mm) and P5 (0.7 x 0.7 x 2.5 mm), 6 variants each,
# the variants whose levels kept every name (11 of 12; docs/levels.md, "Change since a prior"):
# 90 HU pairs (largest |d| 56.9 HU: P5 T2, the top of the scan), 234 height pairs (largest 10.9 mm).
HU_PRECISION_SD = 6.48
HEIGHT_PRECISION_SD_MM = 1.45
LSC_FACTOR = 2.77
HU_LEAST_SIGNIFICANT_CHANGE = round(LSC_FACTOR * HU_PRECISION_SD, 1)
# Not in the published definitions, which assume a reader's precision on radiographs: a height or
# grade flag is raised only where a height also fell by more than the least significant change of
# our own height measurement (4.0 mm, equal to the 4 mm of the FIT definition at this precision).
HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM = round(LSC_FACTOR * HEIGHT_PRECISION_SD_MM, 1)
# Position check: the carried-over centroid within this share of the local spacing between
# vertebral centroids (about 20-35 mm); a name one level off lands about one spacing away.
POSITION_SHARE = 0.5
ALIGN_NEIGHBOURS = 4
FLAG_NOTE = "flags apply published definitions to these measurements; they are not a diagnosis"
FLAG_SOURCES = {
    "incident_fracture": "Genant semi-quantitative grade 0 -> 1 or more (Genant 1993)",
    "progression": "Genant grade increased in a vertebra already graded 1 or more (Genant 1993)",
    "height_loss": "height loss >= 20 % and >= 4 mm (Fracture Intervention Trial, Black 1996)",
    "measurement_error": "height and grade flags only with a height loss beyond the measured least significant "
                         "change",
    "density_loss": "trabecular HU loss beyond the measured least significant change",
}


def _named(entry: Mapping[str, Any]) -> bool:
    confidence = entry.get("confidence")
    return entry.get("verse_id") is not None and (confidence is None or confidence >= MIN_NAME_CONFIDENCE)


def _measures(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return entry.get("measures") or {}


def _rigid(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) with R @ source_i + t closest to target_i in least squares (Kabsch; a proper
    rotation). One point: a translation."""
    if len(source) == 1:
        return np.eye(3), target[0] - source[0]
    cs, ct = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - cs).T @ (target - ct))
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, ct - rotation @ cs


def _local_spacing(index: int, centroids: np.ndarray) -> float | None:
    """Mean distance from vertebra ``index`` to its neighbours in the list (top to bottom)."""
    gaps = [float(np.linalg.norm(centroids[index] - centroids[j])) for j in (index - 1, index + 1)
            if 0 <= j < len(centroids)]
    return float(np.mean(gaps)) if gaps else None


@dataclass(frozen=True)
class PositionCheck:
    """Where the prior's centroid lands after the fit on its neighbours: ``distance_mm`` from
    the current run's, as a ``share`` of the local spacing; ``references``: levels fitted."""

    distance_mm: float | None
    share: float | None
    references: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.share is None or self.share <= POSITION_SHARE


def check_positions(names: list[str], prior_mm: np.ndarray, current_mm: np.ndarray,
                    current_all_mm: np.ndarray, current_index: list[int]) -> list[PositionCheck]:
    """Position checks of matched pairs (``names``, in the current run's order; centroids RAS mm
    in each run's own frame). ``current_all_mm``: every vertebra of the current run, top to
    bottom, and ``current_index`` each pair's place in it (the local spacing)."""

    def check(i: int, excluded: set[int]) -> PositionCheck:
        others = sorted((j for j in range(len(names)) if j != i and j not in excluded),
                        key=lambda j: abs(current_index[j] - current_index[i]))[:ALIGN_NEIGHBOURS]
        spacing = _local_spacing(current_index[i], current_all_mm)
        if not others or spacing is None:
            return PositionCheck(None, None, ())
        rotation, shift = _rigid(prior_mm[others], current_mm[others])
        distance = float(np.linalg.norm(rotation @ prior_mm[i] + shift - current_mm[i]))
        return PositionCheck(distance, distance / spacing, tuple(names[j] for j in others))

    first = [check(i, set()) for i in range(len(names))]
    failed = {i for i, c in enumerate(first) if not c.passed}
    if not failed:
        return first
    # Second pass without the pairs that failed: a slipped name must not pull its neighbours'
    # fits. A pair left with nothing to align on keeps its first verdict (two names that
    # disagree with each other are both refused: neither can be told right).
    second = [check(i, failed) for i in range(len(names))]
    return [f if s.share is None else s for f, s in zip(first, second, strict=True)]


@dataclass
class VertebraChange:
    """One level's change since the prior. ``compared``: matched by level and position;
    ``reason``: why not, or why a part (heights, HU) was not compared; ``flags``: keys of
    ``FLAG_SOURCES`` with their text."""

    name: str
    compared: bool
    position: PositionCheck | None = None
    heights_prior: tuple[float | None, ...] = (None, None, None)
    heights_now: tuple[float | None, ...] = (None, None, None)
    height_change_mm: tuple[float | None, ...] = (None, None, None)
    height_change_pct: tuple[float | None, ...] = (None, None, None)
    hu_prior: float | None = None
    hu_now: float | None = None
    hu_change: float | None = None
    grade_prior: int | None = None
    grade_now: int | None = None
    flags: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    suspect: bool = False  # heights grew beyond the measurement error: no flag of any kind

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def to_json(self) -> dict[str, Any]:
        pos = self.position
        return {
            "name": self.name, "compared": self.compared, "flagged": self.flagged, "suspect": self.suspect,
            "flags": dict(self.flags),
            "reasons": list(self.reasons),
            "position_mm": None if pos is None or pos.distance_mm is None else round(pos.distance_mm, 1),
            "position_share": None if pos is None or pos.share is None else round(pos.share, 2),
            "aligned_on": [] if pos is None else list(pos.references),
            **{f"{side}_prior_mm": self.heights_prior[k] for k, side in enumerate(HEIGHT_SIDES)},
            **{f"{side}_now_mm": self.heights_now[k] for k, side in enumerate(HEIGHT_SIDES)},
            **{f"{side}_change_mm": self.height_change_mm[k] for k, side in enumerate(HEIGHT_SIDES)},
            **{f"{side}_change_pct": self.height_change_pct[k] for k, side in enumerate(HEIGHT_SIDES)},
            "hu_prior": self.hu_prior, "hu_now": self.hu_now, "hu_change": self.hu_change,
            "grade_prior": self.grade_prior, "grade_now": self.grade_now,
        }


@dataclass
class PriorComparison:
    """Every level of either run: compared ones in the current run's order, then the rest.
    ``reason``: why nothing at all was compared (None otherwise)."""

    interval_days: int | None
    vertebrae: list[VertebraChange]
    reason: str | None = None

    @property
    def flagged(self) -> list[str]:
        return [v.name for v in self.vertebrae if v.flagged]

    def to_json(self) -> dict[str, Any]:
        return {"interval_days": self.interval_days, "reason": self.reason, "flagged": self.flagged,
                "compared": [v.name for v in self.vertebrae if v.compared],
                "vertebrae": [v.to_json() for v in self.vertebrae], "flags_note": FLAG_NOTE,
                "flag_sources": FLAG_SOURCES, "hu_least_significant_change": HU_LEAST_SIGNIFICANT_CHANGE,
                "height_least_significant_change_mm": HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM,
                "position_share_limit": POSITION_SHARE}


def _heights(measures: Mapping[str, Any]) -> tuple[float | None, ...]:
    return tuple(measures.get(k) for k in HEIGHT_KEYS)


def _compare_heights(change: VertebraChange, prior: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    change.heights_prior, change.heights_now = _heights(prior), _heights(now)
    for label, m in (("prior", prior), ("now", now)):
        if not m.get("assessable"):
            why = m.get("not_assessable") or "not measured"
            change.reasons.append(f"heights not compared: not assessable {label} ({why})")
            return
    mm, pct = [], []
    for before, after in zip(change.heights_prior, change.heights_now, strict=True):
        if before is None or after is None or before <= 0:
            mm.append(None)
            pct.append(None)
            continue
        mm.append(round(after - before, 1))
        pct.append(round(100.0 * (after - before) / before, 1))
    change.height_change_mm, change.height_change_pct = tuple(mm), tuple(pct)
    change.grade_prior, change.grade_now = prior.get("genant_grade"), now.get("genant_grade")
    largest_gain = max((d for d in mm if d is not None), default=0.0)
    if largest_gain > HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM:
        change.reasons.append(f"no flag: a height grew by {largest_gain:.1f} mm, beyond the measurement error "
                              f"({HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM} mm); an adult vertebra does not grow, so "
                              "these are two different vertebrae (a name slipped in both scans alike) or a failed "
                              "measurement")
        change.suspect = True
        return
    largest_loss = max((-d for d in mm if d is not None), default=0.0)
    if largest_loss <= HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM:
        if any(d is not None and -d >= HEIGHT_LOSS_MM for d in mm) or (
                change.grade_prior is not None and change.grade_now is not None
                and change.grade_now > change.grade_prior):
            change.reasons.append(f"no height flag: the largest loss, {largest_loss:.1f} mm, is within the "
                                  f"measurement error ({HEIGHT_LEAST_SIGNIFICANT_CHANGE_MM} mm)")
        return
    lost = [side for side, d, before in zip(HEIGHT_SIDES, mm, change.heights_prior, strict=True)
            if d is not None and -d >= HEIGHT_LOSS_MM and -d >= HEIGHT_LOSS_SHARE * before]
    if lost:
        worst = min(p for p in pct if p is not None)
        change.flags["height_loss"] = f"{' and '.join(lost)} height lost (down to {worst:+.0f} %)"
    if change.grade_prior is None or change.grade_now is None:
        return
    if change.grade_prior == 0 and change.grade_now >= 1:
        change.flags["incident_fracture"] = f"Genant grade 0 -> {change.grade_now}"
    elif change.grade_prior >= 1 and change.grade_now > change.grade_prior:
        change.flags["progression"] = f"Genant grade {change.grade_prior} -> {change.grade_now}"


def _compare_density(change: VertebraChange, prior: Mapping[str, Any], now: Mapping[str, Any],
                     hu_reason: str | None) -> None:
    change.hu_prior, change.hu_now = prior.get("hu_mean"), now.get("hu_mean")
    if hu_reason is None and change.name == "sacrum":
        hu_reason = "the sacrum is not a vertebral body"
    if hu_reason is None and not (prior.get("complete", True) and now.get("complete", True)):
        hu_reason = "cut by the edge of a scan"
    for label, m in (("the prior", prior), ("this scan", now)):
        if hu_reason is None and m.get("withheld"):
            hu_reason = f"measurements withheld in {label} ({m['withheld']})"
    if hu_reason is None and (change.hu_prior is None or change.hu_now is None):
        hu_reason = "no trabecular region in " + ("the prior" if change.hu_prior is None else "this scan")
    if hu_reason is not None:
        change.reasons.append(f"trabecular HU not compared: {hu_reason}")
        return
    change.hu_change = round(change.hu_now - change.hu_prior, 1)
    if -change.hu_change > HU_LEAST_SIGNIFICANT_CHANGE and not change.suspect:
        change.flags["density_loss"] = (f"trabecular HU {change.hu_change:+.0f}, beyond the least significant "
                                        f"change of {HU_LEAST_SIGNIFICANT_CHANGE:.0f} HU")


def _not_assessable_run(summary: Mapping[str, Any]) -> bool:
    return ((summary.get("quality") or {}).get("verdict")) == "not assessable"


def compare_with_prior(prior_summary: Mapping[str, Any], current_summary: Mapping[str, Any], *,
                       interval_days: int | None = None) -> PriorComparison:
    """The change of each vertebra from ``prior_summary`` to ``current_summary`` (two runs'
    summaries: ``vertebrae`` entries with ``name``, ``verse_id``, ``confidence``, ``centroid_mm``,
    ``complete`` and ``measures``; ``intensity``; ``quality``); see the module docstring.
    ``interval_days``: days from the prior to the current study (reported, not used)."""
    for label, summary in (("the prior", prior_summary), ("this study", current_summary)):
        if _not_assessable_run(summary):
            return PriorComparison(interval_days, [], f"the quality verdict of {label}'s run is 'not assessable'")
        if not summary.get("vertebrae"):
            return PriorComparison(interval_days, [], f"{label}'s run has no vertebrae")
    prior_list: Sequence[Mapping[str, Any]] = prior_summary["vertebrae"]
    current_list: Sequence[Mapping[str, Any]] = current_summary["vertebrae"]
    prior_by_name = {v["name"]: v for v in prior_list if _named(v)}
    named_in_both = [(i, v) for i, v in enumerate(current_list) if _named(v) and v["name"] in prior_by_name]
    # A vertebra cut by either scan's edge has the centroid, heights and HU of its visible part:
    # neither checked nor compared, nor a reference for the others' positions.
    pairs = [(i, v) for i, v in named_in_both if v.get("complete", True) and prior_by_name[v["name"]].get("complete",
                                                                                                         True)]
    hu_reason = None
    if prior_summary.get("intensity", "hu") != "hu" or current_summary.get("intensity", "hu") != "hu":
        hu_reason = "an image is not in Hounsfield units"
    current_all = np.array([v["centroid_mm"] for v in current_list], dtype=np.float64).reshape(-1, 3)
    checks = check_positions([v["name"] for _, v in pairs],
                             np.array([prior_by_name[v["name"]]["centroid_mm"] for _, v in pairs],
                                      dtype=np.float64).reshape(-1, 3),
                             current_all[[i for i, _ in pairs]], current_all, [i for i, _ in pairs])
    changes: list[VertebraChange] = []
    for (_, now), check in zip(pairs, checks, strict=True):
        prior = prior_by_name[now["name"]]
        if not check.passed:
            changes.append(VertebraChange(now["name"], False, check, reasons=[
                f"position check failed: {check.distance_mm:.0f} mm from where the prior's {now['name']} lands "
                f"({check.share:.2f} of the spacing between vertebrae, limit {POSITION_SHARE})"]))
            continue
        change = VertebraChange(now["name"], True, check)
        if check.share is None:
            change.reasons.append("position not checked: no other level in both scans to align on")
        pm = dict(_measures(prior)) | {"complete": prior.get("complete", True)}
        nm = dict(_measures(now)) | {"complete": now.get("complete", True)}
        _compare_heights(change, pm, nm)
        _compare_density(change, pm, nm, hu_reason)
        changes.append(change)
    for _, now in named_in_both:
        if not any(c.name == now["name"] for c in changes):
            changes.append(VertebraChange(now["name"], False, reasons=[
                "cut by the edge of a scan: its centroid, heights and HU are those of the part in view"]))
    paired = {c.name for c in changes}
    for v in current_list:
        if v["name"] not in paired:
            why = ("its name is withheld or uncertain here" if not _named(v)
                   else "not named in the prior (out of its view, or its name withheld)")
            changes.append(VertebraChange(v["name"], False, reasons=[why]))
    for v in prior_list:
        if _named(v) and v["name"] not in paired and not any(c.name == v["name"] for c in changes):
            changes.append(VertebraChange(v["name"], False, reasons=["in the prior only (out of this scan's view, "
                                                                     "or its name withheld here)"]))
    return PriorComparison(interval_days, changes)
