"""Which runtime runs the network's forward pass on this machine: torch or ONNX Runtime.

``SPINESEG_RUNTIME`` is a preference: ``auto`` (default), ``torch`` or ``onnxruntime``. The
rules (``choose_runtime``):

1. a GPU device runs torch (the CUDA path); so does ``torch``, an unknown preference, or a
   machine without the ``onnxruntime`` package;
2. ``onnxruntime`` runs ONNX Runtime (float32) without a probe;
3. ``auto`` runs a timed probe at load (``PROBE_SHAPE``, after a warm-up): ONNX Runtime float32
   against torch in the format ``spineseg.model.precision`` chose. ONNX Runtime is used when it
   is at least ``MIN_SPEEDUP`` times faster *and* its probabilities differ from torch's by at
   most ``MAX_PROBE_DIFF`` on the probe batch; otherwise torch.

The choice is logged and cached, in the process and on disk (``runtime.json`` in the cache
directory, keyed by the CPU, the package versions, the weights' SHA-256 and the
architecture), so a later process on the same machine knows it without importing torch: with
the ONNX graph in the cache too, a command-line run never imports torch at all.

int8 static quantisation was measured and is not offered (``bench/onnx_runtime.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from spineseg.imaging.parallel import available_cores, for_each, thread_count
from spineseg.model.onnx_export import cache_dir

log = logging.getLogger(__name__)

TORCH, ORT = "torch", "onnxruntime"
PREFERENCES = (TORCH, ORT, "auto")
MIN_SPEEDUP = 1.10  # ONNX Runtime must beat torch by this factor in the probe
MAX_PROBE_DIFF = 1e-3  # largest |probability| difference between the runtimes on the probe batch
# batch, height, width (channels from the card): a batch of the size inference runs. On this
# 2-core CPU a 4 x 160 x 160 probe once found ONNX Runtime 0.72x the speed of torch, where
# 8 x 256 x 256 batches ran 1.9x faster on it in the same session; small batches measure
# per-call overhead, not the convolutions.
PROBE_SHAPE = (8, 256, 256)
PROBE_REPEATS = 3


@dataclass(frozen=True)
class Runtime:
    """``name`` (``"torch"`` or ``"onnxruntime"``), why, and the probe's figures (seconds per
    probe batch by runtime, and ``max_diff``; empty when no probe ran)."""

    name: str
    reason: str
    probe: tuple[tuple[str, float], ...] = ()


def package_version(name: str) -> str | None:
    """The installed version of ``name`` (no import), or ``None``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def gpu_present() -> bool:
    """Whether an NVIDIA device node exists (checked without importing torch)."""
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "unknown"
    name = flags = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        if key.strip() in ("flags", "Features") and not flags:
            flags = " ".join(sorted(value.split()))
    return f"{name}|{flags}|{os.cpu_count()}"


def choice_key(weights_sha256: str, architecture: dict) -> str:
    """What the cached choice depends on: this CPU, the runtimes' versions, the weights."""
    parts = {"cpu": _cpu_identity(), "torch": package_version("torch"), "ort": package_version("onnxruntime"),
             "weights": weights_sha256, "architecture": architecture,
             "probe": [*PROBE_SHAPE, PROBE_REPEATS]}  # a changed probe measures afresh
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _choices_file() -> Path:
    return cache_dir() / "runtime.json"


def cached_choice(key: str, path: Path | None = None) -> Runtime | None:
    """The runtime chosen earlier for ``key`` (from ``runtime.json``), or ``None``."""
    path = path or _choices_file()
    try:
        entry = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or entry.get("name") not in (TORCH, ORT):
        return None
    probe = tuple((str(k), float(v)) for k, v in dict(entry.get("probe", {})).items())
    return Runtime(entry["name"], f"{entry.get('reason', '')} (cached probe)", probe)


def store_choice(key: str, choice: Runtime, path: Path | None = None) -> None:
    """Record ``choice`` for ``key``; a cache that cannot be written is only logged."""
    path = path or _choices_file()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[key] = {"name": choice.name, "reason": choice.reason, "probe": dict(choice.probe)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".part-{os.getpid()}-{path.name}")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.warning("runtime choice not cached (%s)", exc)


Probe = Callable[[], dict[str, float]]
_CACHE: dict[str, Runtime] = {}


def choose_runtime(preference: str, device_type: str, key: str, probe: Probe, *,
                   ort_installed: bool | None = None, cache_file: Path | None = None) -> Runtime:
    """The runtime for a network on ``device_type`` (see the module docstring). ``probe``
    returns ``{"torch": s, "onnxruntime": s, "max_diff": d}``; it runs only for ``auto`` when
    neither cache knows ``key``."""
    ort_installed = package_version("onnxruntime") is not None if ort_installed is None else ort_installed
    if preference not in PREFERENCES:
        return Runtime(TORCH, f"unknown SPINESEG_RUNTIME {preference!r}; using torch")
    if device_type != "cpu":
        return Runtime(TORCH, f"torch on {device_type} (the GPU path)")
    if preference == TORCH:
        return Runtime(TORCH, "torch requested")
    if not ort_installed:
        return Runtime(TORCH, "onnxruntime is not installed")
    if preference == ORT:
        return Runtime(ORT, "onnxruntime requested")
    if key in _CACHE:
        return _CACHE[key]
    choice = cached_choice(key, cache_file)
    if choice is None:
        try:
            figures = probe()
        except Exception as exc:  # an export or session failure must not stop inference
            choice = Runtime(TORCH, f"onnxruntime probe failed ({type(exc).__name__}: {str(exc).splitlines()[:1]})")
        else:
            choice = decide(figures)
        store_choice(key, choice, cache_file)
    _CACHE[key] = choice
    log.info("inference runtime %s: %s", choice.name, choice.reason)
    return choice


def decide(figures: dict[str, float]) -> Runtime:
    """The rule of step 3 on a probe's figures."""
    speedup = figures[TORCH] / max(figures[ORT], 1e-9)
    probe = tuple((k, round(float(v), 6)) for k, v in figures.items())
    if figures["max_diff"] > MAX_PROBE_DIFF:
        return Runtime(TORCH, f"onnxruntime differs from torch by {figures['max_diff']:.2g} on the probe "
                       f"(allowed {MAX_PROBE_DIFF:g})", probe)
    if speedup >= MIN_SPEEDUP:
        return Runtime(ORT, f"probe: onnxruntime float32 {speedup:.2f}x faster than torch", probe)
    return Runtime(TORCH, f"probe: onnxruntime only {speedup:.2f}x the speed of torch (needs {MIN_SPEEDUP:.2f}x)",
                   probe)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function, in place on a float32 array."""
    x = np.asarray(x, dtype=np.float32)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x


class OrtNetwork:
    """ONNX Runtime sessions of the network: ``(B, C, H, W)`` float32 -> logits ``(B, 1, H, W)``.

    A batch runs as ``parts`` sub-batches at once (default ``thread_count()``), each on its own
    session with the machine's cores shared out as intra-op threads (``threads`` each, default
    cores // parts). On the 2-core benchmark machine a 16 x 3 x 272 x 272 batch took 0.154-0.162 s
    as two concurrent 8-slice runs of one thread each, and 0.174-0.194 s as one run on two
    threads (ONNX Runtime's threads meet at every layer; two runs of one thread never wait for
    each other)."""

    def __init__(self, path: Path, threads: int | None = None, parts: int | None = None) -> None:
        import onnxruntime as ort

        self.parts = max(1, parts or thread_count())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: on a machine shared with other work, spinning
        # threads fight for the cores (a 16-slice batch took 1.37 s spinning, 0.94 s without, load 6.9).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = threads or max(1, available_cores() // self.parts)
        self.path = Path(path)
        self.sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                         for _ in range(self.parts)]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = min(self.parts, batch.shape[0])
        if parts == 1:
            return self.sessions[0].run(None, {"x": batch})[0]
        chunks = np.array_split(batch, parts)  # contiguous views along the batch axis
        outputs: list[np.ndarray] = [np.empty(0)] * parts

        def run(part: int) -> None:
            outputs[part] = self.sessions[part].run(None, {"x": chunks[part]})[0]

        for_each(run, range(parts))
        return np.concatenate(outputs)


def time_call(call: Callable[[], object], repeats: int = PROBE_REPEATS) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up call: on a shared machine
    other work only ever adds time, so the minimum is the least disturbed figure."""
    call()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best
