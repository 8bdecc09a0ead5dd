"""SpineSeg: spine segmentation in CT.

    >>> from spineseg import load_volume, segment
    >>> seg = segment(load_volume("scan.nii.gz"))
"""

from __future__ import annotations

from spineseg.imaging.io import load_labels, load_volume
from spineseg.imaging.volume import LabelMap, Provenance, Volume
from spineseg.model.inference import Segmentation, segment

__all__ = ["LabelMap", "Provenance", "Segmentation", "Volume", "load_labels", "load_volume", "segment"]
