"""What people say about a version, kept beside it: a display name and notes.

A version folder is immutable (its card describes how it was made); names and notes are
opinions that change, so they live in ``<registry>/metadata/<id>.json``, replaced atomically
under the registry's lock::

    {"display_name": "lumbar fine-tune, Dec", "notes": "...", "updated_by": "rene",
     "updated_at": "2026-12-01T12:00:00.000000+00:00"}

A version without a file has no display name and no notes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from spineseg.errors import InputError, IntegrityError
from spineseg.names import check_typed_name, check_typed_text
from spineseg.registry.atomic import atomic_write_json
from spineseg.registry.store import Registry
from spineseg.registry.version import utc_now_iso

MAX_NAME = 80
MAX_NOTES = 4000


@dataclass(frozen=True)
class VersionMetadata:
    """display_name: a short human name ("" = none: pages show the id); notes: free text."""

    display_name: str = ""
    notes: str = ""
    updated_by: str = ""
    updated_at: str = ""


def _path(registry: Registry, version_id: str) -> Path:
    return registry.root / "metadata" / f"{version_id}.json"


def read_metadata(registry: Registry, version_id: str) -> VersionMetadata:
    """The version's name and notes (empty when never set)."""
    path = _path(registry, version_id)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return VersionMetadata()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"metadata of version {version_id} is corrupt ({exc}): {path}") from exc
    known = VersionMetadata.__dataclass_fields__
    return VersionMetadata(**{k: str(v) for k, v in data.items() if k in known})


def all_metadata(registry: Registry) -> dict[str, VersionMetadata]:
    """Name and notes of every version that has them."""
    return {version_id: read_metadata(registry, version_id) for version_id in registry.version_ids()
            if _path(registry, version_id).is_file()}


def write_metadata(registry: Registry, version_id: str, *, display_name: str, notes: str,
                   actor: str) -> VersionMetadata:
    """Set the version's display name and notes; ``InputError`` naming the field that is too
    long or holds a line break (a name), ``ModelNotFoundError`` for an unknown version."""
    display_name, notes = display_name.strip(), notes.strip()
    if len(display_name) > MAX_NAME:
        raise InputError("display_name", f"is {len(display_name)} characters; at most {MAX_NAME}")
    if any(ch in display_name for ch in "\r\n\t"):
        raise InputError("display_name", "must be one line")
    check_typed_name(display_name, "display_name")
    check_typed_text(notes, "notes")
    if len(notes) > MAX_NOTES:
        raise InputError("notes", f"is {len(notes)} characters; at most {MAX_NOTES}")
    with registry.mutation_lock():
        registry.unverified(version_id)  # unknown id: ModelNotFoundError listing the known ones
        metadata = VersionMetadata(display_name, notes, actor, utc_now_iso())
        path = _path(registry, version_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, asdict(metadata))
    return metadata
