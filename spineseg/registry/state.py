"""The registry's mutable state: which version is in production, which versions were in
production before it (for rollback), and the log of promotions and rollbacks.

Stored as one small JSON file replaced atomically::

    {"schema": 1,
     "production_stack": ["v1", "v2"],          # last item = current production
     "history": [{"action": "promote", "version_id": "v2", "previous_id": "v1",
                  "actor": "cli:alice", "at": "2026-11-24T05:30:00+00:00"}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spineseg.errors import IntegrityError
from spineseg.registry.atomic import atomic_write_json

STATE_SCHEMA = 1
PROMOTE = "promote"
ROLLBACK = "rollback"


@dataclass(frozen=True)
class RegistryEvent:
    """One change of the production pointer.

    action: ``"promote"`` or ``"rollback"``.
    version_id: production after the change.
    previous_id: production before the change (``None`` when there was none).
    actor: who asked for it (e.g. ``"cli:alice"``, ``"web:bob"``, ``"default"``).
    at: when, ISO 8601 UTC.
    """

    action: str
    version_id: str
    previous_id: str | None
    actor: str
    at: str


@dataclass
class RegistryState:
    """Production stack and history; ``production`` is the top of the stack."""

    production_stack: list[str] = field(default_factory=list)
    history: list[RegistryEvent] = field(default_factory=list)

    @property
    def production(self) -> str | None:
        return self.production_stack[-1] if self.production_stack else None

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "production_stack": list(self.production_stack),
            "history": [asdict(event) for event in self.history],
        }


def read_state(path: Path) -> RegistryState:
    """Read the state file; a missing file is an empty state. A file that is not what we
    wrote raises ``IntegrityError`` naming it."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return RegistryState()
    try:
        data = json.loads(raw)
        stack = data["production_stack"]
        events = [RegistryEvent(**event) for event in data["history"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise IntegrityError(f"registry state file is corrupt ({exc}): {path}") from exc
    if not isinstance(stack, list) or not all(isinstance(item, str) for item in stack):
        raise IntegrityError(f"registry state file has a malformed production_stack: {path}")
    return RegistryState(production_stack=stack, history=events)


def write_state(path: Path, state: RegistryState) -> None:
    """Replace the state file atomically."""
    atomic_write_json(path, state.to_payload())
