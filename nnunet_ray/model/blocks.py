"""U-Net building blocks: conv -> norm -> LeakyReLU layers, two-layer blocks, residual blocks, upsampling.

Mirrors the reference's ``models/layers.py`` (NVIDIA nnU-Net, 2021): convolutions carry no bias (the norm that
follows has one), padding per axis is ``(k - s + 1) // 2`` so a stride-2, kernel-3 convolution halves an even
size exactly, and upsampling is a transposed convolution whose kernel equals its stride.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

NORMS = ("instance", "batch", "group")
# The reference uses GroupNorm(32 groups); with its filters (multiples of 32) that is instance-norm-like at
# 32 channels. Channel counts that 32 does not divide fall back to the largest common divisor.
GROUP_NORM_GROUPS = 32


def conv_cls(dim: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d`` for ``dim`` spatial dimensions."""
    return nn.Conv3d if dim == 3 else nn.Conv2d


def make_norm(norm: str, channels: int, dim: int) -> nn.Module:
    """A normalization layer over ``channels`` feature maps.

    Args:
        norm: "instance" (affine, no running stats), "batch" (affine) or "group" (32 groups, affine).
        channels: number of feature maps.
        dim: 2 or 3 spatial dimensions.

    Returns:
        The layer.

    Raises:
        ValueError: unknown ``norm``.
    """
    if norm == "instance":
        return (nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d)(channels, affine=True)
    if norm == "batch":
        return (nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d)(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, channels), channels, affine=True)
    raise ValueError(f"norm: {norm!r} is not one of {', '.join(NORMS)}")


def _padding(kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    # (k - s + 1) // 2: k3/s1 -> 1, k3/s2 -> 1, k1/s1 -> 0 — keeps size (s1) or halves an even size (s2).
    return [(k - s + 1) // 2 for k, s in zip(kernel, stride)]


class ConvLayer(nn.Module):
    """conv (no bias) -> norm -> LeakyReLU; ``(B, in, *S)`` -> ``(B, out, *S / stride)``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int], *,
                 dim: int, norm: str, negative_slope: float) -> None:
        super().__init__()
        self.conv = conv_cls(dim)(in_ch, out_ch, list(kernel), list(stride), _padding(kernel, stride), bias=False)
        self.norm = make_norm(norm, out_ch, dim)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ConvBlock(nn.Module):
    """Two ConvLayers; the first carries the stride (downsampling without pooling)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int], *,
                 dim: int, norm: str, negative_slope: float) -> None:
        super().__init__()
        kw: dict[str, Any] = dict(dim=dim, norm=norm, negative_slope=negative_slope)
        self.conv1 = ConvLayer(in_ch, out_ch, kernel, stride, **kw)
        self.conv2 = ConvLayer(out_ch, out_ch, kernel, [1] * dim, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ResidBlock(nn.Module):
    """Residual encoder block (reference ``--residual``): LeakyReLU(main(x) + shortcut(x)).

    main = ConvLayer(k, s) -> conv(k, 1) -> norm; shortcut = identity, or conv(k, s) -> norm when the block
    changes the stride or the channel count.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int], *,
                 dim: int, norm: str, negative_slope: float) -> None:
        super().__init__()
        ones = [1] * dim
        self.conv1 = ConvLayer(in_ch, out_ch, kernel, stride, dim=dim, norm=norm, negative_slope=negative_slope)
        self.conv2 = conv_cls(dim)(out_ch, out_ch, list(kernel), ones, _padding(kernel, ones), bias=False)
        self.norm2 = make_norm(norm, out_ch, dim)
        self.shortcut: nn.Module = nn.Identity()
        if in_ch != out_ch or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(
                conv_cls(dim)(in_ch, out_ch, list(kernel), list(stride), _padding(kernel, stride), bias=False),
                make_norm(norm, out_ch, dim),
            )
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


class UpsampleBlock(nn.Module):
    """Transposed conv (kernel = stride) to the skip's resolution, concat the skip, then a ConvBlock.

    ``x (B, in, *S)``, ``skip (B, out, *S * stride)`` -> ``(B, out, *S * stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int], *,
                 dim: int, norm: str, negative_slope: float) -> None:
        super().__init__()
        up_cls: type[nn.Module] = nn.ConvTranspose3d if dim == 3 else nn.ConvTranspose2d  # as conv_cls
        self.up = up_cls(in_ch, out_ch, list(stride), list(stride), bias=True)
        # The decoder uses the deeper level's kernel (DynUNet / nnU-Net v1 convention).
        self.conv = ConvBlock(2 * out_ch, out_ch, kernel, [1] * dim, dim=dim, norm=norm,
                              negative_slope=negative_slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.conv(torch.cat([x, skip], dim=1))  # (B, 2*out, *S*stride)
