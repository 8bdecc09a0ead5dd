"""A run's quality verdict: the pure checks of ``metrics.quality`` run once, when the run is made,
and kept in its summary (``"quality"``), where every page, the API and the exports read it.

``{"verdict": "ok" | "review" | "not assessable", "reasons": [...], "checks": [...],
"vertebrae": [...] (when levels exist)}``; what they cost goes with the run's other stage
times (``timings_s["quality"]``), so two runs of one scan have equal verdicts. The checks are advice about a result
that exists: whatever goes wrong inside them, the run still ends with its mask, and the verdict
says that the checks could not run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from spineseg.imaging.volume import Volume
from spineseg.metrics.quality import VERDICTS, assess

log = logging.getLogger(__name__)

BADGE_CLASSES = {"ok": "quality-ok", "review": "quality-review", "not assessable": "quality-not-assessable"}


def assess_run(volume: Volume, mask: np.ndarray, vertebrae: list[dict[str, Any]] | None = None,
               timings: dict[str, float] | None = None) -> dict[str, Any]:
    """The quality part of a run's summary (see the module docstring); never raises. The
    seconds the checks took are added to ``timings`` (a summary's ``timings_s``) as ``quality``."""
    started = time.perf_counter()
    try:
        result = assess(volume.array, mask, volume.affine, intensity=volume.provenance.intensity,
                        vertebrae=vertebrae)
    except Exception as exc:  # advice about a finished result: never the reason a run fails
        log.exception("quality checks failed on %s", volume.provenance.source)
        result = {"verdict": "review", "reasons": [f"the quality checks could not run ({type(exc).__name__})"],
                  "checks": []}
    if timings is not None:
        timings["quality"] = round(time.perf_counter() - started, 4)
    return result


def verdict_of(summary: dict[str, Any] | None) -> str | None:
    """The verdict kept in a run's summary; None for a run made before the checks existed."""
    verdict = ((summary or {}).get("quality") or {}).get("verdict")
    return verdict if verdict in VERDICTS else None
