"""The window predictor of every prediction path: validation while training, ensemble prediction, the benchmarks.

The model runs under autocast (``dtype`` None: float32), flip-TTA-averaged when asked (``tta.flip_tta``);
``window_scores`` slides it over a volume with the sliding-window options (``config.SlidingWindow``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nnunet_ray.config import SlidingWindow
from nnunet_ray.inference.sliding_window import predict_volume
from nnunet_ray.inference.tta import flip_tta


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def window_scores(model: nn.Module, image: torch.Tensor, window: SlidingWindow, *, patch_size: Sequence[int],
                  n_classes: int, device: torch.device, dtype: torch.dtype | None,
                  out_device: torch.device | None = None) -> torch.Tensor:
    """The model's blended scores over a (1, C, Z, Y, X) volume with ``window``'s options.

    Returns:
        (1, K, Z, Y, X) float32 logits, or with ``window.tta`` flip-averaged probabilities, on ``out_device``
        (default: the image's device).
    """
    predictor = make_predictor(model, dtype=dtype, device=device, tta=window.tta, n_spatial=len(patch_size))
    with torch.no_grad():
        return predict_volume(image, predictor, patch_size=patch_size, n_classes=n_classes, overlap=window.overlap,
                              blend=window.blend, batch_size=window.val_batch_size, out_device=out_device)
