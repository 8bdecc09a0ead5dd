"""The shipped default model, ``open_registry`` on a data folder, and ``resolve_model``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from registry_helpers import flip_byte, make_card, write_tiny_weights

from spineseg.config import Settings
from spineseg.errors import InputError, IntegrityError, ModelNotFoundError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, sha256_file
from spineseg.registry import (
    NO_MODEL_MESSAGE,
    RegisteredModel,
    Registry,
    ensure_default_registered,
    lookup,
    open_registry,
    resolve_model,
)


def _model_folder(folder: Path, version_id: str = "default-v1", seed: int = 3) -> Path:
    """A loose model folder as the lead will ship it: card.json + weights.safetensors."""
    folder.mkdir(parents=True)
    write_tiny_weights(folder / WEIGHTS_FILE, seed=seed)
    card = make_card(version_id, metrics={"val_dice": 0.87}, notes="shipped default")
    (folder / CARD_FILE).write_text(card.to_json())
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def test_empty_registry_gets_the_shipped_default_as_production(settings: Settings, tmp_path: Path) -> None:
    shipped = _model_folder(tmp_path / "default_model")
    registry = open_registry(settings, default_dir=shipped)

    assert registry.root == settings.registry_dir
    production = registry.production()
    assert production is not None and production.id == "default-v1"
    assert production.card.notes == "shipped default"
    assert production.card.weights_sha256 == sha256_file(shipped / WEIGHTS_FILE)
    assert [(e.action, e.actor) for e in registry.history()] == [("promote", "default")]
    # Opening again does not register it twice.
    again = open_registry(settings, default_dir=shipped)
    assert again.version_ids() == ["default-v1"] and len(again.history()) == 1


def test_an_empty_registry_also_gets_the_defaults_the_shipped_one_replaced(
    settings: Settings, tmp_path: Path
) -> None:
    shipped = _model_folder(tmp_path / "default_model", "default-v2", seed=4)
    _model_folder(shipped / "predecessors" / "default-v1", "default-v1", seed=3)
    (shipped / "predecessors" / "not-a-model").mkdir()  # a folder without both files is skipped
    registry = open_registry(settings, default_dir=shipped)

    assert registry.version_ids() == ["default-v1", "default-v2"]
    assert registry.production_id() == "default-v2"
    assert [m.id for m in registry.list_versions()] == ["default-v1", "default-v2"]  # oldest first
    assert registry.get("default-v1").card.weights_sha256 == sha256_file(
        shipped / "predecessors" / "default-v1" / WEIGHTS_FILE)
    assert [(e.action, e.actor, e.version_id) for e in registry.history()] == [("promote", "default", "default-v2")]
    assert open_registry(settings, default_dir=shipped).version_ids() == ["default-v1", "default-v2"]


def test_the_package_ships_its_default_with_its_predecessor() -> None:
    default = Path(lookup.__file__).resolve().parents[1] / "default_model"  # the fixtures hide it
    card = ModelCard.read(default / CARD_FILE)
    predecessors = [f.name for f in lookup.shipped_predecessors(default)]
    assert card.predecessor_id in predecessors and card.id not in predecessors
    assert card.metrics["cross_validation"]["cases"], "the shipped card records its expected accuracy"


def test_default_is_found_through_the_package_lookup(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = _model_folder(tmp_path / "pkg_default")
    monkeypatch.setattr(lookup, "shipped_default_dir", lambda: shipped)
    assert open_registry(settings).production().id == "default-v1"


def test_without_a_shipped_default_the_registry_stays_empty(settings: Settings) -> None:
    registry = open_registry(settings)
    assert registry.list_versions() == []
    assert registry.production() is None


def test_default_is_not_added_to_a_registry_that_has_versions(
    settings: Settings, weights: Path, tmp_path: Path
) -> None:
    Registry(settings.registry_dir).register(weights, make_card("mine"))
    shipped = _model_folder(tmp_path / "default_model")
    assert ensure_default_registered(Registry(settings.registry_dir), shipped) is None
    assert open_registry(settings, default_dir=shipped).version_ids() == ["mine"]


def test_a_shipped_default_with_a_wrong_recorded_hash_is_refused(settings: Settings, tmp_path: Path) -> None:
    shipped = _model_folder(tmp_path / "default_model")
    card = make_card("default-v1", weights_sha256="0" * 64)
    (shipped / CARD_FILE).write_text(card.to_json())
    with pytest.raises(IntegrityError, match="does not match"):
        open_registry(settings, default_dir=shipped)


def test_resolve_none_without_a_model_says_how_to_get_one(settings: Settings) -> None:
    with pytest.raises(ModelNotFoundError, match="spineseg train") as caught:
        resolve_model(None, settings)
    assert str(caught.value) == NO_MODEL_MESSAGE


def test_resolve_none_gives_the_production_version(settings: Settings, weights: Path) -> None:
    registry = open_registry(settings)
    registry.register(weights, make_card("a"), make_production=True)
    registry.register(weights, make_card("b"))
    resolved = resolve_model(None, settings)
    assert isinstance(resolved, RegisteredModel) and resolved.id == "a" and resolved.is_production


def test_resolve_id_gives_that_version_and_unknown_ids_list_the_known(settings: Settings, weights: Path) -> None:
    open_registry(settings).register(weights, make_card("a"))
    resolved = resolve_model("a", settings)
    assert isinstance(resolved, RegisteredModel) and resolved.id == "a"
    with pytest.raises(ModelNotFoundError, match="known versions: a"):
        resolve_model("b", settings)


def test_resolve_folder_returns_it_unregistered_and_checks_its_hash(settings: Settings, tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "my_model")
    assert resolve_model(folder, settings) == folder
    assert resolve_model(str(folder), settings) == folder
    assert open_registry(settings).version_ids() == []

    hashed = tmp_path / "hashed_model"
    shutil.copytree(folder, hashed)
    card = make_card("hashed", weights_sha256=sha256_file(hashed / WEIGHTS_FILE))
    (hashed / CARD_FILE).write_text(card.to_json())
    assert resolve_model(hashed, settings) == hashed
    flip_byte(hashed / WEIGHTS_FILE)
    with pytest.raises(IntegrityError, match="tampered or corrupt"):
        resolve_model(hashed, settings)


def test_resolve_refuses_folders_that_are_not_models(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="not a model folder"):
        resolve_model(empty, settings)
    with pytest.raises(InputError, match="no such model folder"):
        resolve_model(tmp_path / "missing" / "model", settings)
    no_weights = tmp_path / "card_only"
    no_weights.mkdir()
    (no_weights / CARD_FILE).write_text(make_card("x").to_json())
    with pytest.raises(InputError, match=r"no weights\.safetensors"):
        resolve_model(no_weights, settings)
