"""Finding a model: the registry under the data folder, the default model shipped inside the
package, and ``resolve_model`` which turns what a user typed (nothing, a folder, an id) into
a model to load."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spineseg.config import Settings
from spineseg.errors import InputError, IntegrityError, ModelNotFoundError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, sha256_file
from spineseg.registry.store import Registry
from spineseg.registry.version import RegisteredModel

log = logging.getLogger(__name__)

DEFAULT_ACTOR = "default"
NO_MODEL_MESSAGE = (
    "no trained model is installed: train one with `spineseg train` "
    "or import one with `spineseg models import`"
)


def shipped_default_dir() -> Path:
    """Where the package keeps its default model (``spineseg/default_model/``); the folder
    may be absent (no default trained yet)."""
    return Path(__file__).resolve().parents[1] / "default_model"


def _read_card(folder: Path) -> ModelCard:
    try:
        return ModelCard.read(folder / CARD_FILE)
    except (TypeError, ValueError) as exc:
        raise InputError(folder / CARD_FILE, f"model card has malformed fields ({exc})") from exc


def ensure_default_registered(registry: Registry, default_dir: Path | None = None) -> RegisteredModel | None:
    """Register the shipped default model as production when the registry holds no version.

    ``default_dir`` defaults to ``shipped_default_dir()``. Returns the new version, or
    ``None`` when nothing was done (registry not empty, or no default folder with both files).
    """
    folder = shipped_default_dir() if default_dir is None else Path(default_dir)
    if not ((folder / CARD_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()):
        return None
    with registry.mutation_lock():
        if registry.version_ids():
            return None
        card = _read_card(folder)
        model = registry.register(folder / WEIGHTS_FILE, card, make_production=True, actor=DEFAULT_ACTOR)
    log.info("registered the shipped default model as %s (production)", model.id)
    return model


def open_registry(settings: Settings | None = None, *, default_dir: Path | None = None) -> Registry:
    """The registry at ``settings.registry_dir`` (default: ``Settings.from_env()``), created if
    needed, with the shipped default model registered when the registry was empty."""
    settings = Settings.from_env() if settings is None else settings
    root = settings.registry_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(root, f"cannot create the model registry folder ({exc.strerror})") from exc
    registry = Registry(root)
    ensure_default_registered(registry, default_dir)
    return registry


def _checked_model_folder(folder: Path) -> Path:
    """A loose model folder (not in the registry): both files present, the card parses, and
    the weights match the card's sha256 when it records one."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(folder, f"model folder holds {CARD_FILE} but no {WEIGHTS_FILE}")
    card = _read_card(folder)
    if card.weights_sha256 and sha256_file(weights) != card.weights_sha256:
        raise IntegrityError(
            f"weights in model folder {folder} do not match their recorded sha256 "
            f"(tampered or corrupt): {weights}"
        )
    return folder


def resolve_model(spec: str | Path | None, settings: Settings | None = None) -> RegisteredModel | Path:
    """Turn a user's model choice into something to load.

    ``None``: the registry's production version (``ModelNotFoundError`` when there is none).
    A folder holding ``card.json``: that folder, checked but not registered (returns a Path).
    Anything else: a registry version id (``ModelNotFoundError`` listing the known ids).
    Registry versions come back with their weights verified.
    """
    if spec is None:
        model = open_registry(settings).production()
        if model is None:
            raise ModelNotFoundError(NO_MODEL_MESSAGE)
        return model
    path = Path(spec).expanduser()
    if path.is_dir() and (path / CARD_FILE).is_file():
        return _checked_model_folder(path)
    text = str(spec)
    if path.is_dir():
        raise InputError(spec, f"folder holds no {CARD_FILE}, so it is not a model folder")
    if "/" in text or os.sep in text:
        raise InputError(spec, "no such model folder")
    return open_registry(settings).get(text)
