"""The window predictor of every prediction path: validation while training, ensemble prediction, the benchmarks.

The model runs under autocast (``dtype`` None: float32), flip-TTA-averaged when asked (``tta.flip_tta``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

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
