"""Seconds per stage of one study's way through the service (issue 31): the upload's intake
(read, de-identify, store) and the segment job's stages (segment, levels and measurements,
each export, scoring against a truth). They go into the run summary's ``stage_times_s`` in the
order the stages ran, and the result page shows them.

``StageTimes`` is a plain recorder: ``with times.stage("segment"): ...`` adds the stage's wall
time (a stage entered twice sums). The intake's share is kept in the study folder
(``intake_times.json``) because the upload ends before the job starts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

INTAKE_FILE = "intake_times.json"
DIGITS = 3

# What each stage key means, for the page's table (in the order a job runs them).
STAGE_LABELS = {
    "read": "read the upload (CT)",
    "read_truth": "read the ground truth onto the CT",
    "deidentify": "de-identify",
    "store": "store the study and queue the job",
    "queue_wait": "wait for a worker",
    "load": "load the CT in the job",
    "segment": "segment (network and post-processing)",
    "write_ct_mask": "write the CT and mask (NIfTI)",
    "load_truth": "load the ground truth",
    "levels_measurements": "vertebra levels and measurements",
    "score_overlap": "score: overlap and volumes",
    "score_surface": "score: surface metrics",
    "score_levels": "score: levels",
    "quality": "quality checks",
    "viewer_copies": "viewer copies",
    "record": "record the results",
    "overlays": "export: overlay images",
    "stl": "export: spine STL",
    "vertebrae_stl": "export: STL per vertebra",
    "seg": "export: DICOM SEG",
    "levels_seg": "export: levels DICOM SEG",
    "rtstruct": "export: RTSTRUCT",
}


class StageTimes:
    """Wall-clock seconds per named stage, in the order the stages first ran."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + max(seconds, 0.0), DIGITS)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (recorded also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def total(self) -> float:
        return round(sum(self.seconds.values()), DIGITS)

    def as_json(self) -> dict[str, float]:
        return dict(self.seconds)


def write_intake_times(study_root: Path, times: StageTimes) -> None:
    """The intake's stage times beside the study's files (a failure is logged, never raised:
    they are a measurement, not a result)."""
    try:
        target = Path(study_root) / INTAKE_FILE
        tmp = target.with_name(".part-" + INTAKE_FILE)
        tmp.write_text(json.dumps(times.as_json()))
        tmp.replace(target)
    except OSError as exc:
        log.warning("intake times of %s not kept: %s", Path(study_root).name, exc)


def read_intake_times(study_root: Path) -> dict[str, float]:
    """The intake's stage times of a study (empty when none were kept or they cannot be read)."""
    try:
        data = json.loads((Path(study_root) / INTAKE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))}


def stage_rows(seconds: dict[str, float] | None) -> list[tuple[str, float]]:
    """``(label, seconds)`` per stage for a page, in the recorded order; unknown keys as they are."""
    return [(STAGE_LABELS.get(key, key), value) for key, value in (seconds or {}).items()]
