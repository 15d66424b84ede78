"""Validation: whole-volume sliding-window prediction of the rank's cases, Dice and loss reduced over ranks.

As the reference (NVIDIA nnU-Net v21.10, ``models/metrics.py``, class ``Dice``): per-case Dice of the argmax over
foreground classes in the
preprocessed space, averaged per class over cases then over classes; the validation loss is the training loss
on full-volume logits, averaged over cases. Each rank predicts its own share of the cases; the sums are
all-reduced, so every rank gets the same numbers (and makes the same early-stopping decision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from nnunet_ray.evaluation.metrics import DiceAccumulator
from nnunet_ray.inference.sliding_window import predict_volume
from nnunet_ray.inference.tta import flip_tta
from nnunet_ray.planning.schema import Plans
from nnunet_ray.training.logs import pick_slice
from nnunet_ray.training.steps import autocast

AllReduce = Callable[[torch.Tensor], Any]


def make_predictor(model: nn.Module, *, dtype: torch.dtype | None, device: torch.device, tta: bool,
                   n_spatial: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Window predictor for ``predict_volume``: the model under autocast, flip-TTA-averaged when ``tta``.

    Returns:
        (B, C, *patch) -> (B, K, *patch) float32 logits, or with ``tta`` softmax probabilities.
    """
    def logits(batch: torch.Tensor) -> torch.Tensor:
        with autocast(dtype, device):
            return model(batch).float()

    return flip_tta(logits, n_spatial=n_spatial) if tta else logits


def validate(model: nn.Module, cases: Iterable[dict], *, plans: Plans, loss_fn: nn.Module, device: torch.device,
             dtype: torch.dtype | None = None, tta: bool = False, overlap: float = 0.5, blend: str = "gaussian",
             batch_size: int = 4, all_reduce: AllReduce | None = None, want_overlay: bool = False) -> dict:
    """Predict every case of this rank and reduce Dice and loss over ranks.

    Args:
        model: the unwrapped network (set to eval mode here, and back to train mode at the end).
        cases: this rank's items {"case_id", "image": (1, C, Z, Y, X), "label": (1, 1, Z, Y, X)}.
        plans: uses ``patch_size`` ((Z, Y, X) in 3D, (Y, X) slice-wise in 2D) and ``n_classes``.
        loss_fn: training loss (logits (1, K, Z, Y, X), label) -> scalar; with ``tta`` it gets log-probabilities,
            whose softmax is the probabilities themselves.
        device: where the model lives.
        dtype: autocast dtype or None.
        tta: flip test-time augmentation.
        overlap, blend, batch_size: sliding-window settings.
        all_reduce: in-place sum over ranks, or None on one rank.
        want_overlay: also return the first case's slice with the most foreground.

    Returns:
        {"dice_mean": float, "dice": per-class list, "val_loss": float, "val_cases": int (all ranks),
        "overlay": (image (Y, X), label (Y, X), pred (Y, X)) CPU tensors, or None}.

    Raises:
        RuntimeError: no rank had a validation case.
    """
    n_classes, patch = plans.n_classes, list(plans.patch_size)
    predictor = make_predictor(model, dtype=dtype, device=device, tta=tta, n_spatial=len(patch))
    dice = DiceAccumulator(n_classes, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    picture = None
    model.eval()
    try:
        for case in cases:
            image = torch.as_tensor(case["image"]).to(device, torch.float32)
            label = torch.as_tensor(case["label"]).to(device)
            with torch.no_grad():
                scores = predict_volume(image, predictor, patch_size=patch, n_classes=n_classes, overlap=overlap,
                                        blend=blend, batch_size=batch_size)  # (1, K, Z, Y, X)
                logits = scores.clamp_min(1e-8).log() if tta else scores
                loss_sum += loss_fn(logits, label).double()
            pred = scores.argmax(1)[0]  # (Z, Y, X)
            dice.update(pred, label[0, 0])
            if want_overlay and picture is None:
                z = pick_slice(label[0, 0])
                picture = (image[0, 0, z].cpu(), label[0, 0, z].cpu(), pred[z].cpu())
    finally:
        model.train()
    per_class, mean = dice.compute(all_reduce)
    totals = torch.stack([loss_sum, dice.count.to(loss_sum)])
    if all_reduce is not None:
        all_reduce(totals)
    return {"dice_mean": mean, "dice": per_class.tolist(), "val_loss": float(totals[0] / totals[1]),
            "val_cases": int(totals[1]), "overlay": picture}
