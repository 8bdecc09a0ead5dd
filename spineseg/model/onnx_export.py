"""The network as an ONNX graph, built from the shipped safetensors weights (never committed).

``export_onnx`` traces a loaded torch network (batch, height and width dynamic) into a file
written atomically; ``onnx_cache_path`` names where a model's graph is kept: the cache
directory (``SPINESEG_CACHE_DIR``, default ``$XDG_CACHE_HOME/spineseg`` or
``~/.cache/spineseg``), keyed by the weights' SHA-256 and the torch version that traced it, so
new weights or a new exporter give a new file and a stale graph is never run.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

OPSET = 17


def cache_dir() -> Path:
    """Where derived files (ONNX graphs, the runtime choice) are kept."""
    explicit = os.environ.get("SPINESEG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spineseg"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_cache_path(weights_sha256: str, torch_version: str) -> Path:
    tag = torch_version.replace("+", "_")
    return cache_dir() / "onnx" / f"{weights_sha256[:24]}-torch{tag}.onnx"


def export_onnx(network, in_channels: int, path: Path) -> Path:
    """Trace ``network`` (a float32 torch module in eval mode, input (B, in_channels, H, W)) to
    ONNX at ``path`` (temp file + rename). Imports torch."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, in_channels, 64, 64)
    tmp = path.with_name(f".part-{os.getpid()}-{path.name}")
    network = network.float().eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and instance-norm notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network, (example,), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"},
                          "logits": {0: "batch", 2: "height", 3: "width"}},
        )
    tmp.replace(path)
    return path
