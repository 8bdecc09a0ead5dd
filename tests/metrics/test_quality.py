"""The quality checks on synthetic scans built to pass or fail each one, and on a real shared case
segmented by the shipped model (clean: "ok")."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.metrics import quality as q
from tests.conftest import CASES

SPACING = (1.0, 1.0, 1.0)


def phantom(shape=(90, 90, 60), spacing=SPACING):
    """RAS grid (axis 1 anterior, axis 2 superior): soft tissue (40 HU) in air, a vertebral column
    of bodies (cancellous 250 HU, 2 mm cortex 800 HU, 30 x 30 mm) in front of a canal (20 HU)
    closed by an arch; the mask is the column with its arch, the canal left out."""
    hu = np.full(shape, -1000.0, dtype=np.float32)
    x, y = np.ogrid[:shape[0], :shape[1]]
    body = ((x - 45) / 40.0) ** 2 + ((y - 45) / 35.0) ** 2 <= 1
    hu[body] = 40.0
    mask = np.zeros(shape, dtype=np.uint8)
    vb = (slice(30, 60), slice(45, 75), slice(5, shape[2] - 5))  # the body, anterior
    hu[vb] = 800.0
    hu[30 + 2:60 - 2, 45 + 2:75 - 2, 5:shape[2] - 5] = 250.0
    mask[vb] = 1
    arch = (slice(35, 55), slice(25, 45), slice(5, shape[2] - 5))  # around the canal, behind the body
    hu[arch] = 600.0
    mask[arch] = 1
    canal = (slice(40, 50), slice(30, 45), slice(5, shape[2] - 5))
    hu[canal] = 20.0
    mask[canal] = 0
    hu += np.random.default_rng(0).normal(0.0, 10.0, shape).astype(np.float32)  # a CT's many grey levels
    return hu, mask, np.diag([*spacing, 1.0])


def by_check(findings):
    return {f.check: f for f in findings}


def test_clean_phantom_is_ok_and_the_canal_is_no_hollow_body():
    hu, mask, affine = phantom()
    result = q.assess(hu, mask, affine)
    assert result["verdict"] == "ok", result["reasons"]
    hollow = next(c for c in result["checks"] if c["check"] == "hollow_bodies")
    assert hollow["value"] == 0.0  # the canal is enclosed, but by the whole body's depth, and holds CSF


def test_hollow_bodies_flagged_solid_not():
    hu, mask, affine = phantom()
    shell = mask.copy()
    shell[32:58, 47:73, 5:55] = 0  # the mask keeps the 2 mm cortex only: a shell around cancellous bone
    finding = by_check(q.mask_checks(shell, hu, affine))["hollow_bodies"]
    assert finding.status == "review"
    assert finding.value > 0.9
    assert by_check(q.mask_checks(mask, hu, affine))["hollow_bodies"].status == "ok"


def test_a_fatty_hole_is_not_a_hollow_body_dark_marrow_is():
    hu, mask, affine = phantom()
    shell = mask.copy()
    shell[32:58, 47:73, 5:55] = 0
    hu[32:58, 47:73, 5:55] = -100.0  # what the mask left out is fat, never marrow
    assert by_check(q.mask_checks(shell, hu, affine))["hollow_bodies"].status == "ok"
    hu[32:58, 47:73, 5:55] = 66.0  # dark marrow: tptbox-lumbar's median, under the 100 HU once required
    assert by_check(q.mask_checks(shell, hu, affine))["hollow_bodies"].status == "review"


def test_the_check_and_the_fill_find_the_same_holes():
    """The segmentation fills exactly what the check would count as a body's interior within the
    fill's own 5 mm: after the fill, the check finds no shell left."""
    from spineseg.model.body_holes import fill_body_holes

    hu, mask, affine = phantom()
    shell = mask.copy()
    shell[32:58, 47:73, 5:55] = 0
    filled = fill_body_holes(shell > 0, hu, SPACING)
    assert (filled == (mask > 0)).all()  # the body's interior, never the canal
    assert by_check(q.mask_checks(filled.astype(np.uint8), hu, affine))["hollow_bodies"].value == 0.0


def test_cracked_column_flagged_disc_and_whole_column_not():
    hu, mask, affine = phantom()
    cracked = mask.copy()
    cracked[:, :, 30] = 0  # one 1 mm slice missing inside a body
    finding = by_check(q.mask_checks(cracked, hu, affine))["cracked_bodies"]
    assert finding.status == "review"
    assert "axial slice 30" in finding.reason
    assert by_check(q.mask_checks(mask, hu, affine))["cracked_bodies"].status == "ok"
    disc = mask.copy()
    disc[:, :, 28:34] = 0  # 6 mm: a disc, thicker than any crack
    disc[35:55, 25:45, 28:34] = mask[35:55, 25:45, 28:34]  # the arch goes on at disc level
    assert by_check(q.mask_checks(disc, hu, affine))["cracked_bodies"].status == "ok"


def test_non_hu_picture_is_not_assessable_and_ct_is_ct():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (64, 64, 20)).astype(np.float32) / 255 * 4095 - 1024
    finding = q.check_ct_like(grey)
    assert finding.status == "not_assessable"
    assert "not like a CT" in finding.reason
    hu, _, _ = phantom()
    assert q.check_ct_like(hu).status == "ok"
    assert q.check_ct_like(hu, intensity="scaled").status == "review"  # the reader mapped a picture
    assert q.check_ct_like(np.round(hu / 16) * 16).status == "review"  # 256 levels or fewer: 8 bit


def test_slice_geometry_checks():
    assert by_check(q.check_slices((90, 90, 60), (0.8, 0.8, 5.0)))["slice_thickness"].status == "review"
    assert by_check(q.check_slices((90, 90, 60), (0.8, 0.8, 3.0)))["slice_thickness"].status == "ok"
    assert by_check(q.check_slices((90, 90, 60), (2.0, 2.0, 2.0)))["in_plane_spacing"].status == "info"
    assert by_check(q.check_slices((90, 90, 60), (3.5, 3.5, 2.0)))["in_plane_spacing"].status == "review"
    assert by_check(q.check_slices((90, 90, 5), (1.0, 1.0, 2.0)))["slice_count"].status == "review"
    assert q.check_localiser((512, 512, 1), (0.7, 0.7, 1.0)).status == "not_assessable"
    assert q.check_localiser((128, 128, 40), (6.0, 6.0, 1.0)).status == "not_assessable"
    assert q.check_localiser((512, 512, 40), (0.7, 0.7, 1.0)).status == "ok"


def test_metal_beside_the_spine_flagged_far_away_not():
    hu, mask, affine = phantom()
    near = hu.copy()
    near[60:66, 45:75, 20:40] = 3000.0  # a rod against the body
    assert by_check(q.mask_checks(mask, near, affine))["metal"].status == "review"
    far = hu.copy()
    far[80:86, 45:75, 20:40] = 3000.0  # 20 mm away: the table, a wire
    assert by_check(q.mask_checks(mask, far, affine))["metal"].status == "ok"


def test_far_components_flagged():
    hu, mask, affine = phantom(shape=(200, 90, 60))
    far = mask.copy()
    far[150:170, 40:60, 10:50] = 1  # 115 mm to the side
    assert by_check(q.mask_checks(far, hu, affine))["far_components"].status == "review"
    assert by_check(q.mask_checks(mask, hu, affine))["far_components"].status == "ok"


def test_abrupt_changes_flagged():
    hu, mask, affine = phantom()
    jumpy = mask.copy()
    jumpy[:, :, 6:55:2] = 0
    jumpy[44:46, 50:52, 6:55:2] = 1  # every other slice nearly empty
    assert by_check(q.mask_checks(jumpy, hu, affine))["abrupt_changes"].status == "review"


def test_empty_and_tiny_masks():
    hu, mask, affine = phantom()
    result = q.assess(hu, np.zeros_like(mask), affine)
    assert result["verdict"] == "not assessable"
    assert "no spine" in result["reasons"][0]
    tiny = np.zeros_like(mask)
    tiny[45:47, 50:52, 10:50] = 1
    assert by_check(q.mask_checks(tiny, hu, affine))["mask_size"].status == "review"


def test_column_at_the_image_edge_is_reported_not_reviewed():
    hu, mask, affine = phantom()
    cut = (slice(None), slice(0, 60), slice(None))  # the image ends 15 mm inside the body
    finding = by_check(q.mask_checks(mask[cut], hu[cut], affine))["field_of_view"]
    assert finding.status == q.THRESHOLDS.spine_edge_status == "info"
    assert by_check(q.mask_checks(mask, hu, affine))["field_of_view"].status == "ok"


def test_verdict_is_the_same_in_any_storage_order():
    hu, mask, affine = phantom()
    cracked = mask.copy()
    cracked[:, :, 30] = 0
    # stored as P-I-R (as tptbox-lumbar): array axes (A->P, S->I, L->R)
    order = (1, 2, 0)
    stored_hu = np.flip(np.flip(hu.transpose(order), 0), 1).copy()
    stored_mask = np.flip(np.flip(cracked.transpose(order), 0), 1).copy()
    stored_affine = np.array([[0, 0, 1, 0], [-1, 0, 0, 89], [0, -1, 0, 59], [0, 0, 0, 1]], dtype=float)
    result = q.assess(stored_hu, stored_mask, stored_affine)
    assert q.assess(hu, cracked, affine)["verdict"] == result["verdict"] == "review"
    assert any("crack" in r for r in result["reasons"])


def test_a_check_that_cannot_run_says_so_and_asks_for_review():
    def broken():
        raise ValueError("odd input")

    findings = q.guarded("metal", broken)
    assert findings[0].status == "not_run" and "odd input" in findings[0].reason
    assert q.combine(findings)["verdict"] == "review"
    assert q.combine([q.Finding("a", "ok", "fine"), q.Finding("b", "info", "note")])["verdict"] == "ok"
    assert q.combine([q.Finding("a", "review", "x"), q.Finding("b", "not_assessable", "y")])["reasons"] == ["y", "x"]


def test_vertebra_verdicts():
    from spineseg.metrics.quality_levels import vertebra_checks

    verdicts = vertebra_checks([
        {"name": "L1", "verse_id": 20, "confidence": 0.9, "volume_ml": 40.0, "complete": True},
        {"name": "L2", "verse_id": 21, "confidence": 0.9, "volume_ml": 40.0, "complete": False},
        {"name": "L3", "verse_id": 22, "confidence": 0.3, "volume_ml": 0.5, "complete": True},
    ])
    assert [v["verdict"] for v in verdicts] == ["ok", "not assessable", "review"]
    assert len(verdicts[2]["reasons"]) == 2


@pytest.mark.shared_data
def test_clean_shared_case_is_ok():
    folder = CASES / "ts-dicom-thorax" / "dicom"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder} (set SPINESEG_SHARED_DATA)")
    from spineseg.imaging.io import load_volume
    from spineseg.model.inference import segment

    volume = load_volume(folder)
    result = q.assess(volume.array, segment(volume).mask, volume.affine, intensity=volume.provenance.intensity)
    assert result["verdict"] == "ok", result["reasons"]


def test_a_vertebra_missing_from_the_column_is_a_gap_a_disc_is_not():
    hu, mask, affine = phantom()
    missing = mask.copy()
    missing[:, :, 20:40] = 0  # 20 mm: a whole vertebra left out
    missing[35:55, 25:45, 20:40] = mask[35:55, 25:45, 20:40] * (np.arange(20) % 7 == 0)  # a few arch slivers
    finding = by_check(q.mask_checks(missing, hu, affine))["column_gaps"]
    assert finding.status == "review" and finding.value == 20.0
    disc = mask.copy()
    disc[:, :, 28:34] = 0  # 6 mm: a disc
    assert by_check(q.mask_checks(disc, hu, affine))["column_gaps"].status == "ok"
