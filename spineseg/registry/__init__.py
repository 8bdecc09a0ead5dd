"""Versioned models: immutable folders of weights + model card, a production pointer with
rollback and history, portable archives, and the lookup the rest of SpineSeg uses.

    >>> from spineseg.registry import open_registry, resolve_model
    >>> registry = open_registry()            # $SPINESEG_DATA_DIR/models
    >>> model = resolve_model(None)           # the production version, weights verified
"""

from __future__ import annotations

from spineseg.registry.lookup import (
    NO_MODEL_MESSAGE,
    add_shipped_defaults,
    ensure_default_registered,
    open_registry,
    resolve_model,
    shipped_default_dir,
    usable_production,
)
from spineseg.registry.state import RegistryEvent
from spineseg.registry.store import Registry
from spineseg.registry.version import VERSION_ID_PATTERN, RegisteredModel, validate_version_id

__all__ = [
    "NO_MODEL_MESSAGE",
    "VERSION_ID_PATTERN",
    "RegisteredModel",
    "Registry",
    "RegistryEvent",
    "add_shipped_defaults",
    "ensure_default_registered",
    "open_registry",
    "resolve_model",
    "shipped_default_dir",
    "usable_production",
    "validate_version_id",
]
