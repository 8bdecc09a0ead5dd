"""Promotion reviews: figures on the same validation cases (stored or measured now), warnings
when lower or missing, refusals unless confirmed / forced by an administrator, audit text."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineseg.model.card import ModelCard
from spineseg.model.dataset import CaseSpec
from spineseg.registry import Registry
from spineseg.services.model_comparison import compare_versions
from spineseg.services.model_governance import (
    COMPUTED,
    PromotionRefused,
    audit_detail,
    check_promotion,
    review_promotion,
)
from tests.conftest import make_model_folder
from tests.model.conftest import write_phantom_case


def register(registry: Registry, tmp_path: Path, version_id: str, *, seed: int, val: dict[str, float] | None,
             production: bool = False) -> None:
    """A tiny version whose card says it was validated on ``val`` (case -> Dice), or never."""
    folder = make_model_folder(tmp_path / version_id, model_id=version_id, seed=seed)
    card = ModelCard.read(folder / "card.json")
    cases = sorted(val or {})
    card.dataset = {"manifest": [{"name": n, "split": "val", "ct": f"{n}/ct.nii.gz", "labels": f"{n}/l.nii.gz"}
                                 for n in cases] + [{"name": "t0", "split": "train"}]}
    if val:
        mean = sum(val.values()) / len(val)
        card.metrics = {"val_dice": mean, "history": [{"epoch": 1, "val_dice": mean, "val_dice_per_case": val}]}
    else:
        card.metrics = {"val_dice": None, "epochs_run": 1}
    registry.register(folder / "weights.safetensors", card, make_production=production, actor="test")


def test_same_cases_use_the_cards_and_a_lower_candidate_needs_confirm(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    register(registry, tmp_path, "prod", seed=0, val={"c1": 0.8, "c2": 0.6}, production=True)
    register(registry, tmp_path, "cand", seed=1, val={"c1": 0.7, "c2": 0.5})
    review = review_promotion(registry, "cand")
    assert review.comparable and review.candidate_lower and not review.missing
    assert review.candidate.cases == review.production.cases == ["c1", "c2"]
    assert review.candidate.dice == pytest.approx(0.6) and review.production.dice == pytest.approx(0.7)
    assert "lower than production prod" in review.warnings[0] and "0.6000 < 0.7000" in review.warnings[0]
    with pytest.raises(PromotionRefused, match="confirm to promote it anyway") as refused:
        check_promotion(review, confirm=False, force=False, is_admin=True)
    assert refused.value.needs == "confirm"
    check_promotion(review, confirm=True, force=False, is_admin=False)
    detail = audit_detail(review, confirmed=True)
    assert "cand: Dice 0.6000 on c1, c2" in detail and "production was prod: Dice 0.7000 on c1, c2" in detail
    assert "lower, confirmed" in detail


def test_higher_candidate_goes_through_without_confirmation(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    register(registry, tmp_path, "prod", seed=0, val={"c1": 0.5}, production=True)
    register(registry, tmp_path, "cand", seed=1, val={"c1": 0.9})
    review = review_promotion(registry, "cand")
    assert review.comparable and not review.candidate_lower and review.warnings == []
    check_promotion(review, confirm=False, force=False, is_admin=False)


def test_different_validation_sets_are_measured_again_on_the_candidates_cases(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    register(registry, tmp_path, "prod", seed=0, val={"elsewhere": 0.95}, production=True)
    register(registry, tmp_path, "cand", seed=3, val={"v1": 0.4, "v2": 0.5})
    specs = []
    for i, name in enumerate(("v1", "v2")):
        ct, labels = write_phantom_case(tmp_path / name, seed=10 + i)
        specs.append(CaseSpec(name=name, ct=str(ct), labels=str(labels), patient=name))
    asked: list[list[str]] = []

    def locate(names: list[str]) -> list[CaseSpec]:
        asked.append(names)
        return [s for s in specs if s.name in names]

    cache = tmp_path / "reviews"
    review = review_promotion(registry, "cand", locate_cases=locate, cache_dir=cache, device="cpu")
    assert asked == [["v1", "v2"]]
    assert review.comparable and review.candidate.source == review.production.source == COMPUTED
    assert review.candidate.cases == review.production.cases == ["v1", "v2"]
    expected = compare_versions(registry, ["prod", "cand"], specs, device="cpu")
    assert review.candidate.dice == expected["versions"]["cand"]["mean_dice"]
    assert review.production.dice == expected["versions"]["prod"]["mean_dice"]
    assert review.candidate_lower == (review.candidate.dice < review.production.dice)
    again = review_promotion(registry, "cand", locate_cases=locate, cache_dir=cache, device="cpu")
    assert asked == [["v1", "v2"]] and again.candidate == review.candidate  # kept, not measured twice


def test_different_cases_that_cannot_be_read_are_flagged_not_comparable(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    register(registry, tmp_path, "prod", seed=0, val={"elsewhere": 0.5}, production=True)
    register(registry, tmp_path, "cand", seed=3, val={"v1": 0.9})
    review = review_promotion(registry, "cand", locate_cases=lambda names: [])
    assert not review.comparable and not review.candidate_lower
    assert "different validation cases" in review.warnings[0]
    with pytest.raises(PromotionRefused):
        check_promotion(review, confirm=False, force=False, is_admin=False)
    assert "not comparable" in audit_detail(review, confirmed=True)


def test_unvalidated_version_needs_an_administrator_who_forces_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    register(registry, tmp_path, "prod", seed=0, val={"c1": 0.5}, production=True)
    register(registry, tmp_path, "raw", seed=2, val=None)
    review = review_promotion(registry, "raw")
    assert review.missing and "has no validation Dice" in review.warnings[0]
    for is_admin, force in ((False, False), (False, True), (True, False)):
        with pytest.raises(PromotionRefused, match="no validation figures") as refused:
            check_promotion(review, confirm=True, force=force, is_admin=is_admin)
        assert refused.value.needs == "force"
    check_promotion(review, confirm=False, force=True, is_admin=True)
    assert "promoted without validation figures by an administrator" in audit_detail(review, forced=True)


def test_promoting_the_production_version_again_is_not_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    register(registry, tmp_path, "raw", seed=2, val=None, production=True)
    review = review_promotion(registry, "raw")
    assert not review.missing and review.warnings == ["raw is already the production version"]
    check_promotion(review, confirm=False, force=False, is_admin=False)
