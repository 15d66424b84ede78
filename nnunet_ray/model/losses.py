"""Training losses: batch Dice + cross-entropy (or softmax focal), and the deep-supervision wrapper and weights.

Dice over foreground classes only. The reference changed its mind: v21.02 (from b741b383) and v21.05 use MONAI
DiceLoss(include_background=False), v21.10 includes background, and the 2022 code returns to False. We exclude
background: with large background volumes its Dice is ~1 and only dilutes the gradient of the classes that matter.
``focal=True`` is a softmax (multi-class) focal loss with gamma 2, as MONAI 0.4's FocalLoss in v21.02/05 — not the
per-channel sigmoid focal term v21.10 silently switched to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check_shapes(logits: torch.Tensor, label: torch.Tensor) -> None:
    if logits.ndim != label.ndim or label.shape[1] != 1 or logits.shape[2:] != label.shape[2:] \
            or logits.shape[0] != label.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and label {tuple(label.shape)} must be (B,K,*S) and (B,1,*S)")


class DiceCELoss(nn.Module):
    """Batch soft Dice over foreground classes plus cross-entropy (or softmax focal loss).

    Dice: per class c >= 1, ``1 - (2 * sum(p_c * y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth)`` with sums over
    the batch and all voxels, averaged over classes. CE: mean over voxels of ``-log p_true``; focal: mean of
    ``-(1 - p_true)^gamma * log p_true``. Computed in float32 whatever the logits' dtype (autocast-safe).
    """

    def __init__(self, focal: bool = False, *, smooth: float = 1e-5, gamma: float = 2.0) -> None:
        super().__init__()
        self.focal = focal
        self.smooth = smooth
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits (B, K, *S)`` against integer ``label (B, 1, *S)`` in [0, K); returns a scalar."""
        return self.from_statistics(self.statistics(logits, label))

    def statistics(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The loss's sums over a part of the volume; summed over parts, ``from_statistics`` gives the whole loss.

        Lets validation compute a full-volume loss slab by slab, never holding K full-volume float maps.

        Returns:
            ``(3K + 2,)`` float32: per class sum(p * y), sum(p), sum(y), then sum of the voxel CE (or focal)
            terms and the number of voxels.
        """
        _check_shapes(logits, label)
        log_probs = F.log_softmax(logits.float(), dim=1)  # (B, K, *S)
        target = label.long()  # (B, 1, *S)
        onehot = torch.zeros_like(log_probs).scatter_(1, target, 1.0)  # (B, K, *S)
        probs = log_probs.exp()
        dims = (0, *range(2, logits.ndim))  # batch Dice: reduce batch and space, keep classes
        nll = -log_probs.gather(1, target)  # (B, 1, *S): -log p_true
        if self.focal:
            nll = (1.0 - torch.exp(-nll)).pow(self.gamma) * nll
        count = nll.new_tensor([float(nll.numel())])
        return torch.cat([(probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims), nll.sum().view(1), count])

    def from_statistics(self, stats: torch.Tensor) -> torch.Tensor:
        """The scalar loss from (summed) ``statistics``."""
        k = (stats.numel() - 2) // 3
        inter, probs, onehot = stats[:k], stats[k:2 * k], stats[2 * k:3 * k]
        dice = 1.0 - (2.0 * inter + self.smooth) / (probs + onehot + self.smooth)
        return dice[1:].mean() + stats[3 * k] / stats[3 * k + 1]


DS_SCHEMES = ("dle", "nnunetv2")
DLE_AUX_LEVELS = 2  # the reference's auxiliary heads: decoder levels 1 and 2


def deep_supervision_weights(n_levels: int, scheme: str = "dle") -> list[float]:
    """Loss weight of each decoder level's output, full resolution (level 0) first, summing to 1.

    Level i gets ``0.5**i`` before normalising. ``dle`` (the reference): levels 0..2 only, deeper levels 0.
    ``nnunetv2`` (``nnUNetTrainer._build_loss``): every level, the lowest-resolution one set to 0 (with one level,
    that level keeps its weight). A level with weight 0 gets no head (``UNet``), so DDP sees no unused parameter;
    nnU-Net v2 keeps the head and gives it 1e-6 under DDP instead.

    Args:
        n_levels: decoder outputs the network could give: its levels less the bottleneck.
        scheme: ``dle`` or ``nnunetv2`` (``--deep-supervision-scheme``).
    """
    if scheme not in DS_SCHEMES:
        raise ValueError(f"deep-supervision scheme must be one of {', '.join(DS_SCHEMES)}, got {scheme!r}")
    weights = [0.5**i for i in range(n_levels)]
    if scheme == "dle":
        weights = [w if i <= DLE_AUX_LEVELS else 0.0 for i, w in enumerate(weights)]
    elif n_levels > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``base`` over deep-supervision outputs.

    Output i gets ``weights[i]`` (default ``0.5**i`` normalised to sum 1; a ``UNet``'s own are its
    ``deep_supervision_weights``) and the label downsampled by nearest neighbour to its spatial size. A single
    tensor (eval mode, or no deep supervision) is passed straight to ``base``.
    """

    def __init__(self, base: nn.Module, weights: list[float] | None = None) -> None:
        super().__init__()
        self.base = base
        self.weights = weights

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """``outputs``: logits (B, K, *S) or a list [main (B, K, *S), aux_i (B, K, *S_i)]; label (B, 1, *S)."""
        if isinstance(outputs, torch.Tensor):
            return self.base(outputs, label)
        weights = self.weights or [0.5**i / sum(0.5**j for j in range(len(outputs))) for i in range(len(outputs))]
        if len(weights) != len(outputs):
            raise ValueError(f"{len(outputs)} deep-supervision outputs but {len(weights)} weights")
        loss = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(weights, outputs):
            loss = loss + w * self.base(out, downsample_label(label, out.shape[2:]))
        return loss


def downsample_label(label: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer ``label (B, 1, *S)`` to ``(B, 1, *size)``; same dtype."""
    if tuple(label.shape[2:]) == tuple(size):
        return label
    # interpolate has no integer kernels on every device; class ids are exact in float32.
    return F.interpolate(label.float(), size=tuple(size), mode="nearest").to(label.dtype)
