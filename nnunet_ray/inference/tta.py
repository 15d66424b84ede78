"""Flip test-time augmentation: average softmax probabilities over every combination of spatial flips.

3D: all subsets of {Z, Y, X} = 8 passes. 2D: all subsets of {Y, X} = 4 passes (the reference flips the slice
axis instead of X, a no-op for a slice-wise model: NVIDIA nnU-Net ``models/nn_unet.py::NNUnet.tta_inference``).
The wrapper acts on a batch of windows, so it composes with ``sliding_window_predict``: every window is flipped,
predicted, flipped back and averaged before blending.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

Predictor = Callable[[torch.Tensor], torch.Tensor]


def flip_combinations(n_spatial: int) -> list[tuple[int, ...]]:
    """Tensor dims to flip for each TTA pass of a (B, C, *spatial) batch, identity first.

    Args:
        n_spatial: 2 or 3 spatial axes.

    Returns:
        ``2 ** n_spatial`` tuples of dims (each in ``2 .. n_spatial + 1``); ``()`` is the unflipped pass.
    """
    if n_spatial not in (2, 3):
        raise ValueError(f"n_spatial must be 2 or 3, got {n_spatial}")
    dims = range(2, 2 + n_spatial)
    return [combo for r in range(n_spatial + 1) for combo in itertools.combinations(dims, r)]


def flip_tta(predictor: Predictor, *, n_spatial: int) -> Predictor:
    """Wrap a logits predictor into one returning flip-averaged probabilities.

    Args:
        predictor: (B, C, *spatial) -> (B, K, *spatial) logits.
        n_spatial: number of spatial axes of the batches it will see (3 for a 3D model, 2 for a 2D one).

    Returns:
        A predictor (B, C, *spatial) -> (B, K, *spatial) float32 softmax probabilities averaged over
        ``2 ** n_spatial`` flip passes.
    """
    combos = flip_combinations(n_spatial)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for dims in combos:
            flipped = batch.flip(dims) if dims else batch
            probs = torch.softmax(predictor(flipped).float(), dim=1)
            probs = probs.flip(dims) if dims else probs  # back to the input's orientation
            total = probs if total is None else total + probs
        assert total is not None, "flip_combinations always has the identity"
        return total / len(combos)

    return predict
