"""The quality gate in front of the Genant grades: a vertebra is graded only when its heights can
carry a grade; otherwise it is "not assessable" with the reason (docs/levels.md, "Quality gate").

``grade_vertebrae(names, measures)`` -> one row per vertebra (top to bottom): the height ratios,
``genant_grade`` and ``height_flag`` for an assessable vertebra, and ``assessable`` /
``not_assessable`` (the reason) for every one. A vertebra that is not assessable gets no
ratios and no grade (None, not 0: "not graded" is not "normal"), and it is never a neighbour's
reference for the crush ratio.

The gate, in order (the first failing check is the reason):
1. a vertebral body (the sacrum is not graded);
2. complete: the body does not touch the scan's ends or the field of view's edge;
3. one body: the opened body is one piece (``BODY_PIECE_SHARE`` in ``vertebra_measures``);
4. all three heights measured;
5. voxels fine enough: one voxel along the spine's axis at most ``MAX_STEP_SHARE`` of the expected
   height (the larger of its own tallest and its neighbours' passing 1-4);
6. plausible against those neighbours: height and body volume within
   ``HEIGHT_BAND`` and ``VOLUME_BAND`` of theirs; without such a neighbour, a height within
   ``LONE_HEIGHT_MM``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spineseg.metrics.vertebra_measures import VertebraMeasures, height_ratios

# 5. A height read from a voxel mask is off by up to one voxel along u (each endplate within half a
# voxel), which moves a ratio of two heights by up to step / H. At step <= H / 8 that is <= 0.125,
# under the 0.20 reduction where the mildest grade starts, leaving room for the few per cent of
# physiological wedging of normal bodies; on the shared truths (bench/measure_truth.py) the
# complete vertebrae that pass at 1/8 carry no false moderate or severe grade. 2.5 mm slices
# pass from a 20 mm height (mid-thoracic bodies at the limit), 3 mm from 24 mm (lumbar).
MAX_STEP_SHARE = 0.125
# 6. Adjacent bodies differ by far less than this (lumbar heights grow ~1 mm per level, C7 to T1 or
# L5 to S1 by < 20 %); a piece of a body split at a crack is about half as tall, two bodies
# merged across a disc twice. A vertebra whose every height is under half its neighbours' (a
# vertebra plana) is not graded either, and says so: the gate cannot tell it from a fragment.
HEIGHT_BAND = (0.5, 1.5)
# Body volume against the neighbours': a fragment or a merged pair is outside it; a crushed body
# of 50 % in one third loses about a sixth of its volume.
VOLUME_BAND = (0.5, 2.0)
# Without a gradable neighbour: adult vertebral bodies are 12-35 mm tall (C3 to L5).
LONE_HEIGHT_MM = (10.0, 45.0)

NOT_GRADED = {"ha_hp": None, "hm_hp": None, "hp_neighbours": None, "genant_grade": None, "height_flag": None}


def _own_checks(name: str, m: VertebraMeasures) -> str | None:
    """Reasons 1-4 (the vertebra alone), or None when it passes them."""
    if name == "sacrum":
        return "sacrum: Genant grades apply to vertebral bodies"
    if m.body_ml <= 0:
        return "no vertebral body found"
    if m.body_cut:
        return "body cut by the edge of the scan (field of view)"
    if m.body_pieces > 1:
        return f"body in {m.body_pieces} pieces"
    if any(h is None for h in m.heights_mm):
        missing = [side for side, h in zip(("anterior", "middle", "posterior"), m.heights_mm, strict=True) if h is None]
        return f"{' and '.join(missing)} height not measurable"
    return None


def _tallest(m: VertebraMeasures) -> float:
    return max(h for h in m.heights_mm if h is not None)


def _neighbour_checks(i: int, measures: list[VertebraMeasures], passed: list[bool]) -> str | None:
    """Reasons 5 and 6 for vertebra ``i`` (which passed 1-4), or None. The expected height is the
    larger of its own tallest height and its neighbours' (passing 1-4): neither a fracture nor a
    fractured neighbour makes a vertebra "too coarse"."""
    m = measures[i]
    height = _tallest(m)
    neighbours = [measures[j] for j in (i - 1, i + 1) if 0 <= j < len(measures) and passed[j]]
    ref_height = float(np.mean([_tallest(n) for n in neighbours])) if neighbours else height
    expected = max(height, ref_height)
    if m.axis_step_mm is not None and m.axis_step_mm > MAX_STEP_SHARE * expected:
        return (f"voxels too coarse: {m.axis_step_mm:.1f} mm along the height axis, over "
                f"1/{round(1 / MAX_STEP_SHARE)} of the expected {expected:.0f} mm height")
    if not neighbours:
        lo, hi = LONE_HEIGHT_MM
        if not lo <= height <= hi:
            return f"height {height:.0f} mm outside {lo:.0f}-{hi:.0f} mm, and no gradable neighbour to compare"
        return None
    lo, hi = HEIGHT_BAND
    if not lo <= height / ref_height <= hi:
        return (f"height {height:.0f} mm against {ref_height:.0f} mm of its neighbours: "
                "a split or merged vertebra, or a vertebra plana")
    ref_volume = float(np.mean([n.body_ml for n in neighbours]))
    lo, hi = VOLUME_BAND
    if not lo <= m.body_ml / ref_volume <= hi:
        return (f"body {m.body_ml:.0f} mL against {ref_volume:.0f} mL of its neighbours: "
                "a split or merged vertebra")
    return None


def gate_reasons(names: list[str], measures: list[VertebraMeasures]) -> list[str | None]:
    """Per vertebra (top to bottom): why it is not assessable, or None when it passes the gate."""
    reasons = [_own_checks(n, m) for n, m in zip(names, measures, strict=True)]
    passed = [r is None for r in reasons]
    return [r if r is not None else _neighbour_checks(i, measures, passed) for i, r in enumerate(reasons)]


def grade_vertebrae(names: list[str], measures: list[VertebraMeasures]) -> list[dict[str, Any]]:
    """Rows (top to bottom) of ratios and grades behind the gate (module docstring)."""
    reasons = gate_reasons(names, measures)
    usable = [r is None for r in reasons]
    rows = []
    for ratio, reason in zip(height_ratios([m.heights_mm for m in measures], usable), reasons, strict=True):
        row = dict(ratio) if reason is None else dict(NOT_GRADED)
        row.update({"assessable": reason is None, "not_assessable": reason})
        rows.append(row)
    return rows
