"""Which number format the network runs in, chosen by what this machine runs fast.

A model card's ``inference_dtype`` is a *preference* (``"float32"``, ``"bfloat16"``,
``"float16"`` or ``"auto"``: the fastest the machine offers). A reduced format is used only
when

1. the hardware has it natively: on x86 CPUs the ``avx512_bf16`` or ``amx_bf16`` flags in
   ``/proc/cpuinfo`` (without them PyTorch emulates bf16 and the forward pass runs about ten
   times slower than float32), on ARM the ``bf16`` feature; on CUDA compute capability >= 8.0
   for bf16 and >= 7.0 for fp16 (tensor cores); float16 is never used on a CPU; and
2. a short timed probe of the network (a small batch, float32 against the candidate, after a
   warm-up) shows the candidate at least ``MIN_SPEEDUP`` times faster.

Otherwise float32 is used. The choice and its reason are logged and cached per process (per
device, architecture and preference), so a card setting can never make a machine slower.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a format is used: ONNX Runtime inference needs none of it
    import torch

log = logging.getLogger(__name__)

DTYPE_NAMES = ("float32", "bfloat16", "float16")
PREFERENCES = (*DTYPE_NAMES, "auto")
MIN_SPEEDUP = 1.15  # a reduced format must beat float32 by this factor in the probe
PROBE_SHAPE = (4, 160, 160)  # batch, height, width of the probe input (channels from the card)
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    """The format of the forward pass: ``name`` (one of ``DTYPE_NAMES``), why, and the probe's
    timings (seconds per probe batch, by format; empty when no probe ran)."""

    name: str
    reason: str
    probe_s: tuple[tuple[str, float], ...] = ()

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.name)

    @property
    def reduced(self) -> bool:
        return self.name != "float32"

    def as_dict(self) -> dict[str, object]:
        return {"dtype": self.name, "reason": self.reason, "probe_s": {k: round(v, 4) for k, v in self.probe_s}}


FLOAT32 = Precision("float32", "float32 requested")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of format ``name`` (a key of ``DTYPE_NAMES``)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``) from /proc/cpuinfo; empty
    where it cannot be read."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_support(name: str, device: torch.device, flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """Whether ``device`` runs format ``name`` natively, and the evidence in words."""
    if name == "float32":
        return True, "float32 is native everywhere"
    if device.type == "cuda":
        import torch

        major, minor = torch.cuda.get_device_capability(device)
        need = (8, 0) if name == "bfloat16" else (7, 0)
        ok = (major, minor) >= need
        return ok, f"CUDA compute capability {major}.{minor} ({'>=' if ok else '<'} {need[0]}.{need[1]} for {name})"
    if device.type != "cpu":
        return False, f"no capability check for {device.type}"
    if name == "float16":
        return False, "float16 is not used on CPUs"
    flags = cpu_flags() if flags is None else flags
    found = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if found:
        return True, f"CPU has {', '.join(found)}"
    machine = platform.machine() or "this CPU"
    return False, (f"{machine} CPU lacks avx512_bf16/amx_bf16 (bf16 would be emulated, "
                   "about 10x slower than float32)")


def _time_forward(network: torch.nn.Module, batch: torch.Tensor, dtype: torch.dtype, repeats: int = 2) -> float:
    """Seconds per forward pass of ``batch`` under autocast to ``dtype`` (after a warm-up)."""
    import torch

    device = batch.device
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        network(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            network(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats


def probe_batch(architecture: dict, device: torch.device) -> torch.Tensor:
    """A random input (``PROBE_SHAPE[0]``, in_channels, ``PROBE_SHAPE[1:]``) on ``device``."""
    import torch

    return torch.rand(PROBE_SHAPE[0], int(architecture["in_channels"]), *PROBE_SHAPE[1:], device=device)


Timer = Callable[["torch.nn.Module", "torch.Tensor", "torch.dtype"], float]
_CACHE: dict[tuple[str, str, str], Precision] = {}


def choose_precision(
    network: torch.nn.Module,
    device: torch.device,
    preference: str,
    architecture: dict,
    *,
    timer: Timer = _time_forward,
    flags: frozenset[str] | None = None,
) -> Precision:
    """The format to run ``network`` in on ``device`` given the card's ``preference``
    (see the module docstring). Cached per process by device, architecture and preference."""
    key = (str(device), json.dumps(architecture, sort_keys=True), preference)
    if key not in _CACHE:
        _CACHE[key] = _decide(network, device, preference, architecture, timer, flags)
        choice = _CACHE[key]
        log.info("inference dtype %s on %s (card asks %s): %s", choice.name, device, preference, choice.reason)
    return _CACHE[key]


def _decide(network: torch.nn.Module, device: torch.device, preference: str, architecture: dict,
            timer: Timer, flags: frozenset[str] | None) -> Precision:
    if preference not in PREFERENCES:
        return Precision("float32", f"unknown inference_dtype {preference!r}; using float32")
    if preference == "float32":
        return FLOAT32
    wanted = [preference] if preference != "auto" else (["bfloat16", "float16"] if device.type == "cuda"
                                                        else ["bfloat16"])
    candidates: list[str] = []
    refusals: list[str] = []
    for name in wanted:
        ok, why = native_support(name, device, flags)
        if ok:
            candidates.append(name)
        else:
            refusals.append(f"{name}: {why}")
    if not candidates:
        return Precision("float32", "; ".join(refusals))
    batch = probe_batch(architecture, device)
    try:
        timings = {"float32": timer(network, batch, torch_dtype("float32"))}
        for name in candidates:
            timings[name] = timer(network, batch, torch_dtype(name))
    except RuntimeError as exc:  # an operator without a kernel for the format
        return Precision("float32", f"probe of {', '.join(candidates)} failed ({str(exc).splitlines()[0]})")
    probe = tuple(timings.items())
    best = min(candidates, key=timings.__getitem__)
    speedup = timings["float32"] / max(timings[best], 1e-9)
    if speedup >= MIN_SPEEDUP:
        return Precision(best, f"{native_support(best, device, flags)[1]}; probe {speedup:.2f}x faster than float32",
                         probe)
    return Precision("float32", f"probe: {best} only {speedup:.2f}x the speed of float32 "
                     f"(needs {MIN_SPEEDUP:.2f}x)", probe)
