"""Intensity normalisation: CT clip + dataset z-score, MRI per-channel z-score over nonzero voxels.

``normalization`` is ``plans["normalization"]``: ``{"scheme": "ct" | "mri", "ct_min", "ct_max", "ct_mean",
"ct_std"}`` (the ``ct_*`` entries are null for MRI). The MRI rule is the reference v21.10's MONAI
``NormalizeIntensity(nonzero=True, channel_wise=True)``: statistics over each channel's nonzero voxels, only those
voxels change, zeros stay 0, a zero standard deviation divides by 1.
"""

from __future__ import annotations

import numpy as np


def _ct(image: np.ndarray, normalization: dict) -> np.ndarray:
    for key in ("ct_min", "ct_max", "ct_mean", "ct_std"):
        if normalization.get(key) is None:
            raise ValueError(f"CT normalization needs {key} in plans['normalization']")
    clipped = np.clip(image, normalization["ct_min"], normalization["ct_max"])
    std = float(normalization["ct_std"]) or 1.0
    return ((clipped - float(normalization["ct_mean"])) / std).astype(np.float32)


def _mri(image: np.ndarray, nonzero_mask: np.ndarray | None) -> np.ndarray:
    out = image.astype(np.float32, copy=True)
    for c, channel in enumerate(out):
        mask = channel != 0 if nonzero_mask is None else nonzero_mask
        if not mask.any():
            continue
        values = channel[mask].astype(np.float64)  # float64 sums: large volumes lose precision in float32
        std = values.std() or 1.0  # population std (ddof=0), as torch/MONAI with unbiased=False
        channel[mask] = (values - values.mean()) / std
    return out


def normalize(image: np.ndarray, normalization: dict, *, nonzero_mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise an image with the plans' scheme.

    Args:
        image: ``(C, Z, Y, X)`` intensities (Hounsfield units for CT).
        normalization: ``plans["normalization"]``.
        nonzero_mask: MRI only: ``(Z, Y, X)`` bool voxels to take statistics over and normalise, used for every
            channel instead of each channel's own ``!= 0``; voxels outside keep their value. Ignored for CT.

    Returns:
        ``(C, Z, Y, X)`` float32, a new array.

    Raises:
        ValueError: unknown scheme, missing CT statistics, or a mask of the wrong shape.
    """
    scheme = normalization.get("scheme")
    if scheme == "ct":
        return _ct(image, normalization)
    if scheme == "mri":
        if nonzero_mask is not None and nonzero_mask.shape != image.shape[1:]:
            raise ValueError(f"nonzero_mask shape {nonzero_mask.shape} != image spatial shape {image.shape[1:]}")
        return _mri(image, nonzero_mask)
    raise ValueError(f"unknown normalization scheme {scheme!r} (expected 'ct' or 'mri')")
