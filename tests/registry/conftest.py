"""Registry fixtures: tiny real weights and a registry in ``tmp_path`` that never sees the
package's shipped default model."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import write_tiny_weights

from spineseg.registry import Registry, lookup


@pytest.fixture(autouse=True)
def no_shipped_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the shipped-default lookup at an absent folder so tests do not depend on whether
    the package has a trained default yet; tests that want one pass ``default_dir``."""
    monkeypatch.setattr(lookup, "shipped_default_dir", lambda: tmp_path / "no_shipped_default")


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return write_tiny_weights(tmp_path / "tiny.safetensors", seed=0)


@pytest.fixture
def other_weights(tmp_path: Path) -> Path:
    return write_tiny_weights(tmp_path / "tiny_other.safetensors", seed=1)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")
