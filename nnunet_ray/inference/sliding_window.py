"""Sliding-window prediction over whole volumes: overlapping patches, Gaussian blending, slice-wise 2D.

What the reference (NVIDIA nnU-Net ``models/nn_unet.py::NNUnet.sliding_window_inference``) does with MONAI's
``monai.inferers.sliding_window_inference``: windows of
the patch size, step ``int(patch * (1 - overlap))`` per axis with the last window moved to end at the border,
zero padding of volumes smaller than the patch, window outputs weighted by a Gaussian importance map
(sigma = 0.125 * patch) and divided by the accumulated weight. The predictor is any callable from a batch of
windows to class scores, so a model, a flip-TTA wrapper (``inference/tta.py``) or a test function all fit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]

SIGMA_SCALE = 0.125  # Gaussian sigma as a fraction of the patch edge (MONAI / nnU-Net default)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis.

    Args:
        size: axis length in voxels (>= patch; pad first otherwise).
        patch: window length in voxels.
        overlap: fraction of a window shared with its neighbour, in [0, 1).

    Returns:
        Sorted, distinct starts; the first is 0 and the last is ``size - patch``, so every voxel is covered.
    """
    if size < patch:
        raise ValueError(f"axis of {size} voxels is smaller than the patch ({patch}); pad it first")
    step = max(int(patch * (1 - overlap)), 1)
    count = math.ceil((size - patch) / step) + 1
    # The last window is shifted back to end exactly at the border rather than overhanging it.
    return sorted({min(i * step, size - patch) for i in range(count)})


def importance_map(patch_size: Sequence[int], blend: str = "gaussian", *,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-voxel weight of a window's prediction.

    Args:
        patch_size: window shape, (Z, Y, X) or (Y, X).
        blend: ``gaussian`` (sigma = 0.125 * edge per axis, centred, peak 1) or ``constant`` (all ones).
        device: where to build the map.

    Returns:
        float32 tensor of shape ``patch_size``, strictly positive.
    """
    if blend == "constant":
        return torch.ones(tuple(patch_size), device=device)
    if blend != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    axes = []
    for edge in patch_size:
        # Centre at (edge - 1) / 2 so the map is symmetric and flip TTA sees the same weights mirrored.
        coords = torch.arange(edge, dtype=torch.float64, device=device) - (edge - 1) / 2
        sigma = max(edge * SIGMA_SCALE, 1e-6)
        axes.append(torch.exp(-0.5 * (coords / sigma) ** 2))
    weights = axes[0]
    for axis in axes[1:]:
        weights = weights[..., None] * axis  # outer product, one axis at a time
    weights = weights / weights.max()
    # Far corners of large patches underflow towards 0; a floor keeps every voxel's total weight > 0.
    return weights.clamp_min(float(weights[weights > 0].min())).float()


def sliding_window_predict(image: torch.Tensor, predictor: Predictor, *, patch_size: Sequence[int], n_classes: int,
                           overlap: float = 0.5, blend: str = "gaussian", batch_size: int = 4,
                           out_device: torch.device | str | None = None) -> torch.Tensor:
    """Predict a whole image window by window and blend the windows into one map.

    Args:
        image: (N, C, *spatial) with ``len(spatial) == len(patch_size)``; N is usually 1 (a volume) and is the
            number of slices for the slice-wise 2D path. Windows of all N items share the predictor batches.
        predictor: maps (B, C, *patch_size) to (B, n_classes, *patch_size) scores (logits or probabilities).
            Called under ``torch.no_grad``.
        patch_size: window shape in voxels.
        n_classes: number of output channels, background included.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        blend: ``gaussian`` or ``constant`` window weights.
        batch_size: windows per predictor call.
        out_device: where the blended whole-image map is accumulated (MONAI's ``device``); windows still run
            on ``image``'s device. Default: ``image``'s device.

    Returns:
        (N, n_classes, *spatial) float32 blended scores on ``out_device``.

    Raises:
        ValueError: the image rank does not match the patch, or the predictor returns the wrong shape.
    """
    patch = tuple(int(p) for p in patch_size)
    if image.dim() != len(patch) + 2:
        raise ValueError(f"image must be (N, C, {len(patch)} spatial axes), got shape {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    padded, crop = _pad_to_patch(image, patch)
    weights = importance_map(patch, blend, device=image.device)
    out_device = image.device if out_device is None else torch.device(out_device)
    out = torch.zeros((padded.shape[0], n_classes, *padded.shape[2:]), device=out_device)
    norm = torch.zeros((padded.shape[0], 1, *padded.shape[2:]), device=out_device)
    window_weights = weights.to(out_device)
    starts = [window_starts(size, edge, overlap) for size, edge in zip(padded.shape[2:], patch)]
    windows = [(n, corner) for n in range(padded.shape[0]) for corner in itertools.product(*starts)]
    with torch.no_grad():
        for first in range(0, len(windows), batch_size):
            chunk = windows[first:first + batch_size]
            slices: list[tuple[int | slice, ...]] = [(n, *(slice(s, s + e) for s, e in zip(corner, patch)))
                                                     for n, corner in chunk]
            batch = torch.stack([padded[(n, slice(None), *box)] for n, *box in slices])  # (B, C, *patch)
            scores = predictor(batch)
            if tuple(scores.shape) != (len(chunk), n_classes, *patch):
                raise ValueError(f"predictor returned {tuple(scores.shape)}, expected "
                                 f"{(len(chunk), n_classes, *patch)}")
            for (n, *box), score in zip(slices, scores.float()):
                out[(n, slice(None), *box)] += (score * weights).to(out_device)
                norm[(n, slice(None), *box)] += window_weights
    result = out.div_(norm)  # in place: no second K-class map
    return result if crop is None else result[(slice(None), slice(None), *crop)]


def predict_volume(image: torch.Tensor, predictor: Predictor, *, patch_size: Sequence[int], n_classes: int,
                   overlap: float = 0.5, blend: str = "gaussian", batch_size: int = 4,
                   out_device: torch.device | str | None = None) -> torch.Tensor:
    """Predict a (1, C, Z, Y, X) volume with a 3D model, or slice by slice with a 2D model.

    A 2D ``patch_size`` (Y, X) treats each Z slice as an image: the slices become the batch axis of one 2D
    sliding window, so windows from several slices share predictor calls.

    Args:
        image: (1, C, Z, Y, X) volume.
        predictor: (B, C, *patch_size) -> (B, n_classes, *patch_size).
        patch_size: (Z, Y, X) for a 3D model, (Y, X) for a 2D one.
        n_classes: output channels, background included.
        overlap: window overlap fraction.
        blend: ``gaussian`` or ``constant``.
        batch_size: windows per predictor call.
        out_device: where the whole-volume scores are accumulated (default: ``image``'s device).

    Returns:
        (1, n_classes, Z, Y, X) float32 scores on ``out_device``.
    """
    if image.dim() != 5 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, Z, Y, X), got shape {tuple(image.shape)}")
    kwargs: dict[str, Any] = dict(patch_size=patch_size, n_classes=n_classes, overlap=overlap, blend=blend,
                                  batch_size=batch_size, out_device=out_device)
    if len(patch_size) == 3:
        return sliding_window_predict(image, predictor, **kwargs)
    if len(patch_size) != 2:
        raise ValueError(f"patch_size must have 2 or 3 axes, got {list(patch_size)}")
    slices = image[0].permute(1, 0, 2, 3)  # (Z, C, Y, X): Z slices as a batch of 2D images
    scores = sliding_window_predict(slices, predictor, **kwargs)  # (Z, K, Y, X)
    return scores.permute(1, 0, 2, 3).unsqueeze(0)  # (1, K, Z, Y, X)


def _pad_to_patch(image: torch.Tensor, patch: tuple[int, ...]) -> tuple[torch.Tensor, tuple[slice, ...] | None]:
    """Zero-pad spatial axes shorter than the patch, split evenly before/after.

    Returns:
        The padded image and the spatial slices that recover the original extent (None when nothing was padded).
    """
    spatial = image.shape[2:]
    gaps = [max(edge - size, 0) for size, edge in zip(spatial, patch)]
    if not any(gaps):
        return image, None
    before = [g // 2 for g in gaps]
    pad = []
    for gap, lo in zip(reversed(gaps), reversed(before)):  # F.pad lists the last axis first
        pad += [lo, gap - lo]
    crop = tuple(slice(lo, lo + size) for lo, size in zip(before, spatial))
    return F.pad(image, pad), crop
