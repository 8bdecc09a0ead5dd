"""Settings read from the environment (prefix ``SPINESEG_``), read once and passed in."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """``$SPINESEG_DATA_DIR``, else ``$XDG_DATA_HOME/spineseg``, else ``~/.local/share/spineseg``."""
    explicit = os.environ.get("SPINESEG_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "spineseg"


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service in one place.

    data_dir: where all state lives (registry, later database, files, queue).
    max_voxels: the largest volume we agree to allocate (guards against hostile headers).
    device: ``"auto"`` picks CUDA when present, else CPU; or an explicit torch device string.
    """

    data_dir: Path
    max_voxels: int = 1024 * 1024 * 2048
    device: str = "auto"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "models"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            data_dir=default_data_dir(),
            max_voxels=int(os.environ.get("SPINESEG_MAX_VOXELS", cls.max_voxels)),
            device=os.environ.get("SPINESEG_DEVICE", "auto"),
        )
