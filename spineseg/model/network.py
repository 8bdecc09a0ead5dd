"""Network construction from a model card's ``architecture`` entry, and weights IO.

The card's ``monai.UNet`` is built with ``spineseg.model.unet2d.UNet2d`` (same layout and
state-dict keys, plain torch) for the 2D residual variant, so inference never imports MONAI;
other variants are handed to MONAI itself.

Weights are stored as safetensors (never pickle) in float16 to keep the shipped model small;
they are loaded back as float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spineseg.errors import InputError
from spineseg.model.unet2d import NORMS, UNet2d

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "name": "monai.UNet",
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 1,
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 2,
    # Batch norm, not MONAI's default instance norm: each voxel's output then depends on its
    # receptive field only, not on the whole field of view (docs/accuracy.md, cross-validation).
    "norm": "batch",
}
SUPPORTED = ("monai.UNet",)


def build_network(architecture: dict[str, Any]) -> torch.nn.Module:
    """A 2D U-Net: input ``(B, in_channels, H, W)`` -> logits ``(B, out_channels, H, W)``.

    H and W must be multiples of the product of ``strides`` (16 by default); inference pads.
    """
    name = architecture.get("name")
    if name not in SUPPORTED:
        raise InputError("architecture.name", f"unsupported network {name!r}; supported: {', '.join(SUPPORTED)}")
    spatial_dims = int(architecture.get("spatial_dims", 2))
    kwargs = {
        "in_channels": int(architecture["in_channels"]),
        "out_channels": int(architecture["out_channels"]),
        "channels": tuple(int(c) for c in architecture["channels"]),
        "strides": tuple(int(s) for s in architecture["strides"]),
        "num_res_units": int(architecture.get("num_res_units", 2)),
    }
    norm = architecture.get("norm", "instance")
    if norm not in NORMS:
        raise InputError("architecture.norm", f"unsupported norm {norm!r}; supported: {', '.join(NORMS)}")
    if norm != "instance":
        kwargs["norm"] = norm
    if spatial_dims == 2 and kwargs["num_res_units"] >= 1:
        return UNet2d(**kwargs)
    return build_monai_network(architecture)


def build_monai_network(architecture: dict[str, Any]) -> torch.nn.Module:
    """MONAI's own ``UNet`` for ``architecture`` (imports MONAI: about 3 s)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=int(architecture.get("spatial_dims", 2)),
        in_channels=int(architecture["in_channels"]),
        out_channels=int(architecture["out_channels"]),
        channels=tuple(int(c) for c in architecture["channels"]),
        strides=tuple(int(s) for s in architecture["strides"]),
        num_res_units=int(architecture.get("num_res_units", 2)),
        norm=architecture.get("norm", "instance"),
    )


def save_weights(network: torch.nn.Module, path: Path) -> Path:
    """Write the state dict as float16 safetensors (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to("cpu").half() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in network.state_dict().items()}
    tmp = path.with_name(path.name + ".part")
    save_file(state, str(tmp))
    tmp.replace(path)
    return path


def load_weights(network: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load safetensors weights into ``network`` (float32); a mismatch names the file."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"cannot read weights ({exc})") from exc
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit the card's architecture ({str(exc).splitlines()[0]})") from exc
    return network


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)
