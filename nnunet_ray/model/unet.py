"""The dynamic 2D/3D U-Net of NVIDIA's nnU-Net, built only from the plans.

Level 0 is the input block (stride 1), levels 1..L-2 downsample with a strided first convolution, level L-1 is
the bottleneck. The decoder mirrors the encoder with transposed convolutions and skip concatenation; a 1x1 head
gives logits. With deep supervision, 1x1 heads on coarser decoder outputs return extra logits at those resolutions in
train() mode only: levels 1 and 2 (the reference's, scheme ``dle``) or every level but the lowest-resolution one
(nnU-Net v2's, ``nnunetv2``), as ``losses.deep_supervision_weights`` weights them; the loss downsamples the label to
meet them (``losses.DeepSupervisionLoss``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnunet_ray.model.blocks import NORMS, ConvBlock, ResidBlock, UpsampleBlock, conv_cls
from nnunet_ray.model.losses import deep_supervision_weights
from nnunet_ray.planning.schema import Plans


class UNet(nn.Module):
    """Encoder-decoder U-Net.

    forward(x: (B, in_channels, *spatial)) -> logits (B, n_classes, *spatial), or in train() mode with deep
    supervision a list ``[main, aux_1, ..., aux_k]``: aux_i has shape (B, n_classes, *spatial / prod(strides[1..i]))
    and loss weight ``deep_supervision_weights[i]``. Every spatial size must be divisible by the product of the
    strides along its axis.
    """

    def __init__(self, *, dim: int, in_channels: int, n_classes: int, kernels: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], filters: Sequence[int], norm: str = "instance",
                 residual: bool = False, deep_supervision: bool = False, deep_supervision_scheme: str = "dle",
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        kw: dict[str, Any] = dict(dim=dim, norm=norm, negative_slope=negative_slope)
        n_levels = len(filters)
        enc_block = ResidBlock if residual else ConvBlock
        chans = [in_channels, *filters]
        self.encoder = nn.ModuleList(
            enc_block(chans[i], chans[i + 1], kernels[i], strides[i], **kw) for i in range(n_levels))
        # decoder[j] goes from level L-1-j to level L-2-j, with the deeper level's kernel and stride.
        self.decoder = nn.ModuleList(
            UpsampleBlock(filters[lv], filters[lv - 1], kernels[lv], strides[lv], **kw)
            for lv in range(n_levels - 1, 0, -1))
        conv = conv_cls(dim)
        self.head = conv(filters[0], n_classes, 1)
        # Heads only where a level's loss weight is not 0 (the weights are a prefix of decoder levels).
        weights = [w for w in deep_supervision_weights(n_levels - 1, deep_supervision_scheme) if w > 0]
        self.deep_supervision_weights = weights if deep_supervision else [1.0]
        self.aux_levels = list(range(1, len(self.deep_supervision_weights)))
        self.aux_heads = nn.ModuleList(conv(filters[lv], n_classes, 1) for lv in self.aux_levels)
        self.deep_supervision = deep_supervision
        self.stride_product = [math.prod(s[a] for s in strides) for a in range(dim)]
        self._init_weights(negative_slope)

    def _init_weights(self, negative_slope: float) -> None:
        # Reference init: Kaiming-normal (a = LeakyReLU slope) on every conv weight including the heads, conv
        # biases (only the heads have them) zero; transposed convs and norms keep PyTorch defaults.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, a=negative_slope)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        bad = [n for n, p in zip(x.shape[2:], self.stride_product) if n % p]
        if bad:
            raise ValueError(f"input spatial shape {tuple(x.shape[2:])} is not divisible by the stride "
                             f"product {tuple(self.stride_product)}")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)  # skips[lv]: (B, filters[lv], *spatial / prod(strides[:lv+1]))
        x = skips.pop()
        decoded = []
        for up in self.decoder:
            x = up(x, skips.pop())
            decoded.append(x)  # deepest first: decoded[-1] is level 0, decoded[-1-lv] is level lv
        logits = self.head(x)
        if not (self.deep_supervision and self.training):
            return logits
        aux = [head(decoded[-1 - lv]) for head, lv in zip(self.aux_heads, self.aux_levels)]
        return [logits, *aux]


def _check_plans(plans: Plans) -> None:
    dim = plans.dim
    if dim not in (2, 3):
        raise ValueError(f"plans: dim must be 2 or 3, got {dim!r}")
    n = len(plans.filters)
    if n < 2 or len(plans.kernels) != n or len(plans.strides) != n:
        raise ValueError(f"plans: kernels, strides and filters need the same length >= 2, got "
                         f"{len(plans.kernels)}, {len(plans.strides)}, {n}")
    if any(len(k) != dim for k in plans.kernels) or any(len(s) != dim for s in plans.strides):
        raise ValueError(f"plans: every kernel and stride needs {dim} entries")
    if any(s != 1 for s in plans.strides[0]):
        raise ValueError(f"plans: strides[0] (input block) must be all ones, got {list(plans.strides[0])}")


def build_unet(plans: Plans, *, norm: str = "instance", residual: bool = False, deep_supervision: bool = False,
               deep_supervision_scheme: str = "dle", negative_slope: float = 0.01) -> UNet:
    """Build the U-Net the plans describe.

    Args:
        plans: uses dim, in_channels, n_classes, kernels, strides, filters.
        norm: "instance", "batch" or "group".
        residual: residual encoder blocks (the reference's ``--residual``).
        deep_supervision: add 1x1 heads on coarser decoder levels; train() mode then returns ``[main, aux...]``.
        deep_supervision_scheme: which levels and weights: ``dle`` (levels 1 and 2, fewer if the network is
            shallower) or ``nnunetv2`` (every level but the lowest-resolution one); ``deep_supervision_weights``.
        negative_slope: LeakyReLU slope, also Kaiming init's ``a``.

    Returns:
        The model, in train() mode, float32.

    Raises:
        ValueError: the plans are inconsistent, or ``norm`` is unknown.
    """
    _check_plans(plans)
    if norm not in NORMS:
        raise ValueError(f"norm: {norm!r} is not one of {', '.join(NORMS)}")
    return UNet(dim=plans.dim, in_channels=plans.in_channels, n_classes=plans.n_classes,
                kernels=plans.kernels, strides=plans.strides, filters=plans.filters, norm=norm,
                residual=residual, deep_supervision=deep_supervision,
                deep_supervision_scheme=deep_supervision_scheme, negative_slope=negative_slope)
