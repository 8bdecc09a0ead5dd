"""One registered model version: an immutable folder holding ``weights.safetensors`` and
``card.json``, plus the rules for naming versions and checking their weights."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from safetensors import SafetensorError, safe_open

from spineseg.errors import InputError, IntegrityError
from spineseg.model.card import CARD_FILE, WEIGHTS_FILE, ModelCard, sha256_file

VERSION_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Lower-case letters, digits, ``.``, ``_``, ``-``; 1..64 characters; no leading dot or dash,
so an id is always a plain, visible folder name."""


def validate_version_id(version_id: str, source: object = "version id") -> str:
    """Return ``version_id`` unchanged, or raise ``InputError`` saying what is wrong with it."""
    if not isinstance(version_id, str) or not VERSION_ID_PATTERN.fullmatch(version_id):
        raise InputError(
            source,
            f"{version_id!r} is not a valid version id: use 1-64 characters of a-z, 0-9, '.', '_', '-' "
            "starting with a letter or digit",
        )
    return version_id


def utc_now_iso() -> str:
    """The current time as an ISO 8601 UTC string with microseconds, e.g.
    ``2026-11-24T05:30:00.123456+00:00`` (fixed width, so strings sort in time order)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def generate_version_id(weights_sha256: str, now: datetime | None = None) -> str:
    """``v<YYYYMMDD>-<HHMMSS>-<first 8 hex of the weights hash>``, e.g. ``v20261124-053000-1a2b3c4d``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"v{moment:%Y%m%d-%H%M%S}-{weights_sha256[:8]}"


def run_version_id(run_id: str) -> str:
    """The version id a training run registers: ``run-<run id>``, the same on every retry."""
    return validate_version_id(f"run-{run_id}", "training run id")


def package_version() -> str:
    """The installed ``spineseg`` distribution's version; from a source checkout that was never
    installed, the version in ``pyproject.toml``; ``"unknown"`` when neither is available."""
    try:
        return importlib.metadata.version("spineseg")
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return "unknown"
    version = data.get("project", {}).get("version")
    return str(version) if version else "unknown"


def check_safetensors(path: Path, source: object | None = None) -> list[str]:
    """Parse the header of a safetensors file (never unpickles anything) and return the
    tensor names; ``InputError`` naming ``source`` (default: the path) when it is not one."""
    source = path if source is None else source
    if not path.is_file():
        raise InputError(source, "weights file not found")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            names = list(fh.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(source, f"not a valid safetensors weights file ({exc})") from exc
    if not names:
        raise InputError(source, "weights file holds no tensors")
    return names


@dataclass(frozen=True)
class RegisteredModel:
    """A model version as stored in the registry.

    id: the version id (also the folder name).
    path: the version folder, holding ``weights.safetensors`` and ``card.json``.
    card: the parsed model card (``card.id == id``).
    is_production: whether the registry's production pointer names this version.
    """

    id: str
    path: Path
    card: ModelCard
    is_production: bool = False

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def card_path(self) -> Path:
        return self.path / CARD_FILE

    def verify(self) -> str:
        """Hash the weights and compare with ``card.weights_sha256``; return the hash.

        Raises ``IntegrityError`` naming the version and the file on a mismatch, a missing
        file or a card without a recorded hash.
        """
        if not self.card.weights_sha256:
            raise IntegrityError(
                f"version {self.id} has no recorded weights sha256 in {self.card_path}; cannot verify it"
            )
        if not self.weights_path.is_file():
            raise IntegrityError(f"weights of version {self.id} are missing: {self.weights_path}")
        actual = sha256_file(self.weights_path)
        if actual != self.card.weights_sha256:
            raise IntegrityError(
                f"weights of version {self.id} do not match their recorded sha256 "
                f"(tampered or corrupt): {self.weights_path}"
            )
        return actual


def read_version_folder(folder: Path, *, is_production: bool = False) -> RegisteredModel:
    """Read ``folder/card.json`` into a ``RegisteredModel`` (weights not hashed here).

    A card that cannot be read, or whose id differs from the folder name, raises
    ``IntegrityError``: registry folders are written only by the registry.
    """
    card_path = folder / CARD_FILE
    try:
        card = ModelCard.read(card_path)
    except InputError as exc:
        raise IntegrityError(f"card of version {folder.name} is unreadable: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise IntegrityError(
            f"card of version {folder.name} has malformed fields ({exc}): {card_path}"
        ) from exc
    if card.id != folder.name:
        raise IntegrityError(
            f"card of version {folder.name} names a different id {card.id!r} (edited by hand?): {card_path}"
        )
    return RegisteredModel(id=folder.name, path=folder, card=card, is_production=is_production)
