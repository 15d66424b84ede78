"""Validation: whole-volume sliding-window prediction of the rank's cases, Dice and loss reduced over ranks.

As the reference (NVIDIA nnU-Net v21.10, ``models/metrics.py``, class ``Dice``): per-case Dice of the argmax over
foreground classes in the
preprocessed space, averaged per class over cases then over classes; the validation loss is the training loss
on full-volume logits, averaged over cases. Each rank predicts its own share of the cases; the sums are
all-reduced, so every rank gets the same numbers (and makes the same early-stopping decision).

Memory: the blended whole-volume scores are the one K-class map held per case; on a GPU they are accumulated on
the CPU when they would exceed ``SCORES_ON_DEVICE_LIMIT`` (MONAI's ``sw_device``/``device`` split), and the loss
is computed slab by slab along Z, so no softmax / one-hot / log map of the whole volume is ever built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from nnunet_ray.config import SlidingWindow
from nnunet_ray.evaluation.metrics import DiceAccumulator
from nnunet_ray.inference.predictor import window_scores
from nnunet_ray.planning.schema import Plans
from nnunet_ray.training.logs import pick_slice

if TYPE_CHECKING:
    from nnunet_ray.model.losses import DiceCELoss

AllReduce = Callable[[torch.Tensor], Any]
SCORES_ON_DEVICE_LIMIT = 1 << 30  # bytes: larger whole-volume score maps go to the CPU with scores_on="auto"
LOSS_SLAB_VOXELS = 1 << 21  # voxels per slab of the slab-wise validation loss (~8 MiB per float map)
SCORES_ON = ("auto", "cpu", "device")


def scores_device(scores_on: str, device: torch.device, n_classes: int, shape: tuple[int, ...]) -> torch.device:
    """Where one case's whole-volume scores ``(K, *shape)`` are accumulated.

    Args:
        scores_on: ``"device"`` (the model's), ``"cpu"``, or ``"auto"``: the CPU when the float32 map would
            exceed ``SCORES_ON_DEVICE_LIMIT`` on an accelerator.
        device: the model's device.
        n_classes: K.
        shape: spatial shape of the case.
    """
    if scores_on not in SCORES_ON:
        raise ValueError(f"scores_on must be one of {SCORES_ON}, got {scores_on!r}")
    cpu = torch.device("cpu")
    if scores_on == "cpu" or device.type == "cpu":
        return cpu
    too_big = 4 * n_classes * math.prod(shape) > SCORES_ON_DEVICE_LIMIT
    return cpu if scores_on == "auto" and too_big else device


def volume_loss(loss_fn: nn.Module, scores: torch.Tensor, label: torch.Tensor, *, probabilities: bool,
                device: torch.device, slab_voxels: int = LOSS_SLAB_VOXELS) -> torch.Tensor:
    """``loss_fn(logits, label)`` of a whole volume, computed slab by slab along Z on ``device``.

    Args:
        loss_fn: ``DiceCELoss`` (or ``DeepSupervisionLoss`` around one, which evaluates it on one output).
        scores: (1, K, Z, Y, X) logits, or probabilities when ``probabilities`` (their log is the logits).
        label: (1, 1, Z, Y, X) integer labels, any device.
        probabilities: the scores are softmax probabilities (flip TTA).
        device: where each slab is computed.
        slab_voxels: at most this many voxels per slab (at least one Z slice).

    Returns:
        0-d float64 tensor on ``device``: the same value as ``loss_fn`` on the whole volume.
    """
    base = cast("DiceCELoss", getattr(loss_fn, "base", loss_fn))  # a DiceCELoss, or the one a DeepSupervisionLoss wraps
    depth = max(1, slab_voxels // max(1, math.prod(scores.shape[3:])))
    total: torch.Tensor | None = None
    for z0 in range(0, scores.shape[2], depth):
        part = scores[:, :, z0:z0 + depth].to(device, torch.float32)
        logits = part.clamp_min(1e-8).log() if probabilities else part
        stats = base.statistics(logits, label[:, :, z0:z0 + depth].to(device)).double()
        total = stats if total is None else total + stats
    assert total is not None, "a volume has at least one slice"
    return base.from_statistics(total)


def validate(model: nn.Module, cases: Iterable[dict], *, plans: Plans, loss_fn: nn.Module, device: torch.device,
             dtype: torch.dtype | None = None, window: SlidingWindow = SlidingWindow(),
             all_reduce: AllReduce | None = None, want_overlay: bool = False, scores_on: str = "auto") -> dict:
    """Predict every case of this rank and reduce Dice and loss over ranks.

    Args:
        model: the unwrapped network (set to eval mode here, and back to train mode at the end).
        cases: this rank's items {"case_id", "image": (1, C, Z, Y, X), "label": (1, 1, Z, Y, X)}.
        plans: uses ``patch_size`` ((Z, Y, X) in 3D, (Y, X) slice-wise in 2D) and ``n_classes``.
        loss_fn: training loss (logits (1, K, Z, Y, X), label) -> scalar; with TTA it gets log-probabilities,
            whose softmax is the probabilities themselves.
        device: where the model lives.
        dtype: autocast dtype or None.
        window: the sliding-window options (flip TTA, overlap, blending, windows per forward pass).
        all_reduce: in-place sum over ranks, or None on one rank.
        want_overlay: also return the first case's slice with the most foreground.
        scores_on: where whole-volume scores are accumulated (``scores_device``).

    Returns:
        {"dice_mean": float, "dice": per-class list, "val_loss": float, "val_cases": int (all ranks),
        "overlay": (image (Y, X), label (Y, X), pred (Y, X)) CPU tensors, or None}.

    Raises:
        RuntimeError: no rank had a validation case.
    """
    n_classes, patch = plans.n_classes, list(plans.patch_size)
    dice = DiceAccumulator(n_classes, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    picture = None
    model.eval()
    try:
        for case in cases:
            image = torch.as_tensor(case["image"]).to(device, torch.float32)
            label = torch.as_tensor(case["label"])
            where = scores_device(scores_on, device, n_classes, tuple(image.shape[2:]))
            with torch.no_grad():
                scores = window_scores(model, image, window, patch_size=patch, n_classes=n_classes, device=device,
                                       dtype=dtype, out_device=where)  # (1, K, Z, Y, X)
                loss_sum += volume_loss(loss_fn, scores, label, probabilities=window.tta, device=device)
            pred = scores.argmax(1)[0].to(device, torch.uint8)  # (Z, Y, X); K <= 255 classes
            del scores
            label = label.to(device)
            dice.update(pred, label[0, 0])
            if want_overlay and picture is None:
                z = pick_slice(label[0, 0])
                picture = (image[0, 0, z].cpu(), label[0, 0, z].cpu(), pred[z].long().cpu())
    finally:
        model.train()
    per_class, mean = dice.compute(all_reduce)
    totals = torch.stack([loss_sum, dice.count.to(loss_sum)])
    if all_reduce is not None:
        all_reduce(totals)
    return {"dice_mean": mean, "dice": per_class.tolist(), "val_loss": float(totals[0] / totals[1]),
            "val_cases": int(totals[1]), "overlay": picture}
