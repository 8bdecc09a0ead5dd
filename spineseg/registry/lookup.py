"""Finding a model: the registry under the data folder, the default model shipped inside the
package, and ``resolve_model`` which turns what a user typed (nothing, a folder, an id) into
a model to load."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spineseg.config import Settings
from spineseg.errors import InputError, IntegrityError, ModelNotFoundError, ModelUnavailableError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, sha256_file
from spineseg.registry.store import Registry
from spineseg.registry.version import RegisteredModel

log = logging.getLogger(__name__)

DEFAULT_ACTOR = "default"
PREDECESSORS_DIR = "predecessors"
NO_MODEL_MESSAGE = (
    "no trained model is installed: train one with `spineseg train` "
    "or import one with `spineseg models import`"
)


def usable_production(registry: Registry) -> RegisteredModel:
    """The production version, weights verified: what new work will segment with. Checked
    before any work is taken (an upload, a re-run, an import), so work that cannot run is
    refused with the reason instead of being queued to fail. ``ModelNotFoundError`` when no
    version is production, ``ModelUnavailableError`` naming what is wrong with it otherwise
    (hashing is cached: only a changed file is hashed again)."""
    try:
        model = registry.production()
    except (IntegrityError, OSError) as exc:
        production_id = registry.production_id()
        raise ModelUnavailableError(
            f"the production model {production_id} cannot be used ({exc}): promote another version, roll back, "
            "or restore its files from a backup") from exc
    if model is None:
        raise ModelNotFoundError(NO_MODEL_MESSAGE)
    return model


def shipped_default_dir() -> Path:
    """Where the package keeps its default model (``spineseg/default_model/``); the folder
    may be absent (no default trained yet). Earlier defaults it replaced lie in its
    ``predecessors/<version id>/`` folders."""
    return Path(__file__).resolve().parents[1] / "default_model"


def _read_card(folder: Path) -> ModelCard:
    try:
        return ModelCard.read(folder / CARD_FILE)
    except (TypeError, ValueError) as exc:
        raise InputError(folder / CARD_FILE, f"model card has malformed fields ({exc})") from exc


def _is_model_folder(folder: Path) -> bool:
    return (folder / CARD_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def shipped_predecessors(default_dir: Path) -> list[Path]:
    """The model folders of the defaults that ``default_dir``'s model replaced, oldest first."""
    folder = default_dir / PREDECESSORS_DIR
    found = [f for f in folder.iterdir() if _is_model_folder(f)] if folder.is_dir() else []
    return sorted(found, key=lambda f: (_read_card(f).created or "", f.name))


def _register_shipped(registry: Registry, folder: Path, *, make_production: bool) -> list[RegisteredModel]:
    """Register the shipped default in ``folder`` and its predecessors, oldest first, each one
    the registry lacks; the default becomes production when ``make_production``. The caller
    holds the registry's mutation lock."""
    card = _read_card(folder)
    present = set(registry.version_ids())
    added = []
    for earlier in shipped_predecessors(folder):
        earlier_card = _read_card(earlier)  # its id, not its folder's name, names the version
        if earlier_card.id not in present | {card.id}:
            added.append(registry.register(earlier / WEIGHTS_FILE, earlier_card, actor=DEFAULT_ACTOR))
    if card.id not in present:
        added.append(registry.register(folder / WEIGHTS_FILE, card, make_production=make_production,
                                       actor=DEFAULT_ACTOR))
    return added


def ensure_default_registered(registry: Registry, default_dir: Path | None = None) -> RegisteredModel | None:
    """Register the shipped default model as production when the registry holds no version,
    after the earlier defaults it replaced (not production: there to compare or roll back to).

    ``default_dir`` defaults to ``shipped_default_dir()``. Returns the new production version,
    or ``None`` when nothing was done (registry not empty, or no default folder with both
    files). A registry that has versions is left alone: its users chose what it holds
    (``add_shipped_defaults`` adds a newer shipped default to it).
    """
    folder = shipped_default_dir() if default_dir is None else Path(default_dir)
    if not _is_model_folder(folder):
        return None
    with registry.mutation_lock():
        if registry.version_ids():
            return None
        model = _register_shipped(registry, folder, make_production=True)[-1]
    log.info("registered the shipped default model as %s (production)", model.id)
    return model


def add_shipped_defaults(registry: Registry, default_dir: Path | None = None) -> list[RegisteredModel]:
    """Add the shipped default and its predecessors that ``registry`` lacks, none of them as
    production (``spineseg models add-shipped``: a registry made by an older release)."""
    folder = shipped_default_dir() if default_dir is None else Path(default_dir)
    if not _is_model_folder(folder):
        raise ModelNotFoundError(f"this installation ships no default model ({folder} holds no {CARD_FILE})")
    with registry.mutation_lock():
        return _register_shipped(registry, folder, make_production=False)


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
