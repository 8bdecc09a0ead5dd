"""Comparing registry versions on labelled cases: per-case Dice and time, per-site means,
Bland-Altman against the reference, plots, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from spineseg.errors import InputError
from spineseg.model.card import ModelCard
from spineseg.model.dataset import CaseSpec
from spineseg.registry import Registry
from spineseg.services.model_comparison import compare_versions, write_comparison_plots
from tests.conftest import make_model_folder
from tests.model.conftest import write_phantom_case


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """Three tiny versions: ``a`` and ``a-copy`` hold the same weights, ``b`` other ones."""
    registry = Registry(tmp_path / "models")
    for version_id, seed in (("a", 0), ("a-copy", 0), ("b", 5)):
        folder = make_model_folder(tmp_path / version_id, model_id=version_id, seed=seed)
        registry.register(folder / "weights.safetensors", ModelCard.read(folder / "card.json"))
    return registry


def cases(tmp_path: Path) -> list[CaseSpec]:
    specs = []
    for i, site in enumerate(("north", "north", "south")):
        ct, labels = write_phantom_case(tmp_path / f"case{i}", seed=i)
        specs.append(CaseSpec(name=f"case{i}", ct=str(ct), labels=str(labels), patient=f"P{i}", site=site))
    return specs


def test_same_weights_agree_exactly_and_other_weights_differ(registry: Registry, tmp_path: Path) -> None:
    result = compare_versions(registry, ["a", "a-copy", "b"], cases(tmp_path), device="cpu")
    assert result["reference"] == "a" and [c["case"] for c in result["cases"]] == ["case0", "case1", "case2"]
    for case in result["cases"]:
        assert case["dice"]["a"] == case["dice"]["a-copy"]
        assert case["volume_ml"]["a"] == case["volume_ml"]["a-copy"]
        assert case["truth_volume_ml"] > 0
    same = result["versions"]["a-copy"]
    assert same["dice_minus_reference"] == 0.0
    assert same["bland_altman_dice"]["bias"] == 0.0 and same["bland_altman_dice"]["sd"] == 0.0
    other = result["versions"]["b"]
    differences = [c["dice"]["b"] - c["dice"]["a"] for c in result["cases"]]
    assert other["bland_altman_dice"]["bias"] == pytest.approx(sum(differences) / 3, abs=1e-6)
    seconds = [c["seconds"]["b"] - c["seconds"]["a"] for c in result["cases"]]
    assert other["seconds_minus_reference"] == pytest.approx(sum(seconds) / 3, abs=1e-3)
    north = [c["dice"]["b"] for c in result["cases"] if c["site"] == "north"]
    assert other["dice_by_site"]["north"] == pytest.approx(sum(north) / 2, abs=1e-6)
    assert other["dice_by_site"]["south"] == pytest.approx(result["cases"][2]["dice"]["b"], abs=1e-6)

    plots = write_comparison_plots(result, tmp_path / "plots")
    assert sorted(plots) == ["a-copy", "b"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.values())


def test_refusals_name_the_problem(registry: Registry, tmp_path: Path) -> None:
    specs = cases(tmp_path)[:1]
    for versions, message in ((["a"], "choose 2 to 6"), (["a", "a"], "named twice")):
        with pytest.raises(InputError, match=message):
            compare_versions(registry, versions, specs, device="cpu")
    with pytest.raises(InputError, match="no test cases"):
        compare_versions(registry, ["a", "b"], [], device="cpu")
    one_case = compare_versions(registry, ["a", "b"], specs, device="cpu")
    assert one_case["versions"]["b"]["bland_altman_dice"] is None
    assert write_comparison_plots(one_case, tmp_path / "none") == {}
