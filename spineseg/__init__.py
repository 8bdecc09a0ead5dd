"""SpineSeg: spine segmentation in CT.

    >>> from spineseg import load_volume, segment
    >>> seg = segment(load_volume("scan.nii.gz"))

Public names are imported lazily so that ``import spineseg.imaging`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Volume": "spineseg.imaging.volume",
    "LabelMap": "spineseg.imaging.volume",
    "Provenance": "spineseg.imaging.volume",
    "load_volume": "spineseg.imaging.io",
    "load_labels": "spineseg.imaging.io",
    "Segmentation": "spineseg.model.inference",
    "segment": "spineseg.model.inference",
}

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'spineseg' has no attribute {name!r}")
