"""Dice per case and class, and its distributed per-case mean — the validation metric of the reference.

Rule per foreground class c (reference ``models/metrics.py``): absent from the label -> 1 if also absent from
the prediction, else 0; otherwise 2TP / (2TP + FP + FN). The summary is a per-case mean per class, then an
unweighted mean over classes. Values are fractions in [0, 1] (the reference logs them x100).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def case_dice(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Dice of each foreground class for one case.

    Args:
        pred: (Z, Y, X) (or any shape) integer class map in [0, n_classes).
        label: integer class map of the same shape.
        n_classes: number of classes including background.

    Returns:
        (n_classes - 1,) float32 tensor on pred's device, class 1 first.

    Raises:
        ValueError: shapes differ, or a value lies outside [0, n_classes).
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and label {tuple(label.shape)} shapes differ")
    pred, label = pred.long().flatten(), label.long().flatten()
    for name, t in (("pred", pred), ("label", label)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
            raise ValueError(f"{name} has values outside [0, {n_classes})")
    # Confusion matrix in one pass: row = label class, column = predicted class.
    conf = torch.bincount(label * n_classes + pred, minlength=n_classes**2).view(n_classes, n_classes)
    tp = conf.diagonal().double()
    in_label, in_pred = conf.sum(1).double(), conf.sum(0).double()
    denom = in_label + in_pred  # = 2TP + FP + FN
    dice = torch.where(in_label > 0, 2 * tp / denom.clamp(min=1), (in_pred == 0).double())
    return dice[1:].float()


def dice_from_logits(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-case Dice of argmax predictions.

    Args:
        logits: (B, K, *S) class scores (or probabilities).
        label: (B, 1, *S) integer labels.

    Returns:
        (B, K - 1) float32 tensor.
    """
    n_classes = logits.shape[1]
    pred = logits.argmax(1)  # (B, *S)
    return torch.stack([case_dice(p, y[0], n_classes) for p, y in zip(pred, label)])


class DiceAccumulator:
    """Running per-case Dice sums over validation cases, reducible across ranks.

    ``update`` once per case; ``compute`` returns the per-class mean over all cases seen (on all ranks when
    given an ``all_reduce``). State lives on ``device`` so NCCL can reduce it without a copy.
    """

    def __init__(self, n_classes: int, *, device: torch.device | str = "cpu") -> None:
        self.n_classes = n_classes
        self.sums = torch.zeros(n_classes - 1, dtype=torch.float64, device=device)  # (K-1,) sum of Dice
        self.count = torch.zeros((), dtype=torch.float64, device=device)  # number of cases

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Add one case: ``pred`` and ``label`` (Z, Y, X) integer maps. Returns its (K-1,) Dice."""
        dice = case_dice(pred, label, self.n_classes)
        self.sums += dice.to(self.sums)
        self.count += 1
        return dice

    def reset(self) -> None:
        """Forget every case (start of a new validation round)."""
        self.sums.zero_()
        self.count.zero_()

    def compute(self, all_reduce: Callable[[torch.Tensor], object] | None = None) -> tuple[torch.Tensor, float]:
        """Per-class mean Dice and its mean over classes.

        Args:
            all_reduce: optional in-place sum across ranks (e.g. ``torch.distributed.all_reduce``); applied
                once to a copy of [sums, count], so the local state is unchanged and compute can repeat.

        Returns:
            ((K-1,) float32 tensor of per-class means, float mean over classes).

        Raises:
            RuntimeError: no case was added on any rank.
        """
        buf = torch.cat([self.sums, self.count.view(1)])  # (K,): one collective instead of two
        if all_reduce is not None:
            all_reduce(buf)
        sums, count = buf[:-1], float(buf[-1])
        if count == 0:
            raise RuntimeError("DiceAccumulator.compute: no cases were added")
        per_class = (sums / count).float()
        return per_class, float(per_class.mean())
