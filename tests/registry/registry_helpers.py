"""Helpers shared by the registry tests: real tiny safetensors weights from a small torch
module, model cards, and byte-level tampering."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from spineseg.model.card import ModelCard


def write_tiny_weights(path: Path, seed: int = 0) -> Path:
    """Save the state dict of a 2-layer conv net (a few hundred floats) as safetensors."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    save_file(net.state_dict(), str(path))
    return path


def make_card(version_id: str = "", parent_id: str | None = None, **fields: object) -> ModelCard:
    return ModelCard(
        id=version_id,
        architecture={"name": "tests.TinyConv", "in_channels": 3, "out_channels": 1},
        parent_id=parent_id,
        **fields,  # type: ignore[arg-type]
    )


def flip_byte(path: Path, offset_from_end: int = 5) -> None:
    """Invert one byte near the end of ``path`` (inside the tensor data, past the header)."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))
