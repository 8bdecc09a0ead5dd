"""A 2D residual U-Net built from plain torch modules, state-dict compatible with MONAI's ``UNet``.

MONAI's package import costs about three seconds of a command-line run, more than the network
needs to segment a small CT; inference builds this module instead. It reproduces the layout
of ``monai.networks.nets.UNet(spatial_dims=2, ...)`` with its defaults (kernel 3, up kernel 3,
PReLU, instance norm without affine, "NDA" ordering, dropout 0, bias), or with
``norm="batch"`` (MONAI's batch norm, affine, running statistics), so the same
``weights.safetensors`` load with ``strict=True`` and give the same outputs (tested against
MONAI in ``tests/model/test_unet2d.py``):

- a level = ``Sequential(down, SkipConnection(next level), up)``; the bottom level is a
  stride-1 residual unit; the skip concatenates ``[x, next(x)]`` on the channel axis;
- down = residual unit of ``num_res_units`` convolutions (the first strided), its residual
  branch a convolution (kernel 3, or 1x1 when the stride is 1) when the shape changes;
- up = transposed convolution (stride s, output padding s - 1) + norm + PReLU, then a
  one-convolution residual unit (at the top its last convolution has no norm/activation).

Module names match MONAI's (``model.1.submodule.0.conv.unit0.conv.weight`` ...), which is
what makes the state dicts interchangeable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("instance", "batch")


class _ADN(nn.Module):
    """Norm -> PReLU, named ``N`` and ``A`` as in MONAI (dropout 0 is the identity and has no
    parameters, so it is left out). Instance norm (MONAI's default, no affine) normalises each
    slice by its own statistics, so a voxel's output depends on the whole field of view; batch
    norm uses the statistics learnt in training, so the output depends only on the voxel's
    neighbourhood."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        if norm == "batch":
            self.N: nn.Module = nn.BatchNorm2d(channels)
        else:
            self.N = nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
        self.A = nn.PReLU(num_parameters=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(self.N(x))


class _Convolution(nn.Module):
    """``conv`` then (unless ``conv_only``) ``adn``; (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, conv: nn.Module, out_channels: int, *, conv_only: bool = False, norm: str = "instance") -> None:
        super().__init__()
        self.conv = conv
        if not conv_only:
            self.adn = _ADN(out_channels, norm)
        self.conv_only = conv_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.conv_only else self.adn(x)


class _ResidualUnit(nn.Module):
    """``conv`` (``subunits`` convolutions, the first with ``stride``) plus ``residual``
    (identity, or a convolution when channels or size change). (B, C_in, H, W) ->
    (B, C_out, H / stride, W / stride)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, subunits: int,
                 last_conv_only: bool = False, norm: str = "instance") -> None:
        super().__init__()
        self.conv = nn.Sequential()
        channels, unit_stride = in_channels, stride
        subunits = max(1, subunits)
        for index in range(subunits):
            conv = nn.Conv2d(channels, out_channels, 3, stride=unit_stride, padding=1)
            conv_only = last_conv_only and index == subunits - 1
            self.conv.add_module(f"unit{index}", _Convolution(conv, out_channels, conv_only=conv_only, norm=norm))
            channels, unit_stride = out_channels, 1
        self.residual: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            kernel, padding = (3, 1) if stride != 1 else (1, 0)
            self.residual = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.residual(x)


class _SkipConnection(nn.Module):
    """``cat([x, submodule(x)], dim=1)``."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class UNet2d(nn.Module):
    """Residual U-Net: ``(B, in_channels, H, W)`` -> logits ``(B, out_channels, H, W)``; H and W
    multiples of the product of ``strides``. ``num_res_units`` >= 1 (MONAI's plain-convolution
    variant, 0, is not reproduced: ``build_network`` hands it to MONAI)."""

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int],
                 num_res_units: int = 2, norm: str = "instance") -> None:
        super().__init__()
        if num_res_units < 1:
            raise ValueError("UNet2d needs num_res_units >= 1")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        self.norm = norm
        if len(channels) < 2 or len(strides) < len(channels) - 1:
            raise ValueError("need at least two channels and len(channels) - 1 strides")
        self.num_res_units = num_res_units
        self.model = self._level(in_channels, out_channels, list(channels), list(strides), is_top=True)

    def _level(self, inc: int, outc: int, channels: list[int], strides: list[int], *, is_top: bool) -> nn.Module:
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            inner = self._level(c, c, channels[1:], strides[1:], is_top=False)
            up_in = 2 * c
        else:
            inner = _ResidualUnit(c, channels[1], stride=1, subunits=self.num_res_units, norm=self.norm)
            up_in = c + channels[1]
        down = _ResidualUnit(inc, c, stride=s, subunits=self.num_res_units, norm=self.norm)
        transposed = nn.ConvTranspose2d(up_in, outc, 3, stride=s, padding=1, output_padding=s - 1)
        up = nn.Sequential(
            _Convolution(transposed, outc, norm=self.norm),
            _ResidualUnit(outc, outc, stride=1, subunits=1, last_conv_only=is_top, norm=self.norm),
        )
        return nn.Sequential(down, _SkipConnection(inner), up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
