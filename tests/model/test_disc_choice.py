"""Disc positions chosen together along the curve (spine_curve.choose_discs, issue 27 item 1):
on synthetic profiles (a column of boxes with known spacing) and on synthetic 3D spines."""

from __future__ import annotations

import numpy as np
from synthetic_spine import BODY_MM, DISC_MM, build_spine

from spineseg.model.levels import vertebra_levels
from spineseg.model.spine_curve import MIN_PIECE_MM, choose_discs


def column(bodies: list[float], disc: float = 8.0, edge: float = 5.0, area: float = 800.0):
    """A body cross-section profile (1 mm a sample, top first): ``edge`` mm of body cut by the
    field of view, then each body of the given height followed by a disc; the true disc centres."""
    parts = [np.full(int(edge), area)]
    centres = []
    pos = edge
    for h in bodies:
        parts += [np.zeros(int(disc)), np.full(int(h), area)]
        centres.append(pos + disc / 2)
        pos += disc + h
    return np.concatenate(parts).astype(np.float64), np.asarray(centres)


def _close(found: np.ndarray, truth: np.ndarray, tol: float) -> bool:
    return len(found) == len(truth) and bool(np.all(np.abs(np.sort(found) - truth) <= tol))


def test_every_disc_of_a_clean_column_is_found_at_its_centre():
    for bodies, disc in (([15.0] * 6, 5.0), ([22.0] * 8, 6.0), ([27.0, 29.0, 31.0, 33.0, 35.0], 10.0)):
        profile, centres = column(bodies, disc)
        assert _close(choose_discs(profile), centres, 1.5), (bodies, choose_discs(profile), centres)


def test_a_thin_crack_through_a_body_is_not_a_disc():
    profile, centres = column([24.0] * 7)
    for body in (1, 3, 5):  # every second body cracked: 2 mm of mask lost across its middle
        mid = int(centres[body] + 4 + 12)
        profile[mid - 1:mid + 1] = 0.0
    assert _close(choose_discs(profile), centres, 1.5)


def test_two_cracks_never_leave_a_piece_shorter_than_a_vertebra():
    """The hidden sagittal scan: 10 mm "vertebrae" between cracks were accepted."""
    profile, centres = column([30.0] * 6)
    for body in (2, 3):
        top = int(centres[body] + 4)
        profile[top + 9:top + 11] = 0.0  # cracks 10 mm apart inside one 30 mm body
        profile[top + 19:top + 21] = 0.0
    found = choose_discs(profile)
    inner = np.diff(found)
    assert np.all(inner >= MIN_PIECE_MM)
    assert _close(found, centres, 1.5)


def test_bridged_discs_are_split_where_the_heights_ask_for_it():
    profile, centres = column([22.0] * 8, disc=6.0)
    for disc in (2, 5):  # two discs wholly filled by the mask: no dip left at all
        c = int(centres[disc])
        profile[c - 3:c + 3] = 800.0
    assert _close(choose_discs(profile), centres, 3.5)
    profile, centres = column([22.0] * 8, disc=6.0)
    c = int(centres[3])
    profile[c - 3:c + 3] = 700.0  # a shallow dip only
    assert _close(choose_discs(profile), centres, 1.5)


def test_an_empty_or_short_profile_has_no_discs():
    assert len(choose_discs(np.zeros(50))) == 0
    assert len(choose_discs(np.ones(3))) == 0
    assert len(choose_discs(np.full(40, 500.0))) == 0  # one vertebra's length: nothing to cut


def _z_range(truth: np.ndarray, verse: int) -> tuple[int, int]:
    zs = np.nonzero((truth == verse).any(axis=(0, 1)))[0]
    return int(zs.min()), int(zs.max())


def test_a_cracked_and_bridged_synthetic_spine_keeps_its_vertebrae():
    names = ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    spine = build_spine(names, ribs={"T11", "T12"}, sacrum=True)
    mask = spine.mask.copy()
    from spineseg.model.level_ids import VERSE_BY_NAME

    for name in ("T12", "L2", "L4"):  # one 2 mm slice lost across the middle of these bodies
        lo, hi = _z_range(spine.truth, VERSE_BY_NAME[name])
        k = (lo + hi) // 2
        mask[:, :, k][spine.truth[:, :, k] == VERSE_BY_NAME[name]] = 0
    lo3, _ = _z_range(spine.truth, VERSE_BY_NAME["L3"])
    _, hi4 = _z_range(spine.truth, VERSE_BY_NAME["L4"])
    footprint = (spine.truth[:, :, lo3] == VERSE_BY_NAME["L3"])  # the L3/L4 disc filled under L3's bottom
    mask[:, :, hi4 + 1:lo3][footprint] = 1
    assert (BODY_MM, DISC_MM) == (26.0, 8.0)
    levels = vertebra_levels(mask, spine.ct, spine.affine)
    assert [v.name for v in levels.vertebrae] == [*names, "sacrum"]
    for v in levels.vertebrae:
        region = (levels.labels == v.label) & (spine.truth > 0)  # the filled disc has no true vertebra
        # The bridged disc is cut where the CT's endplate band peaks: within a few mm of its centre.
        floor = 0.85 if v.name in ("L3", "L4") else 0.95
        assert np.mean(spine.truth[region] == v.verse_id) > floor, v.name
