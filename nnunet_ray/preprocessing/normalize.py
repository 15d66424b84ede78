"""Intensity normalisation: CT clip + dataset z-score, MRI per-channel z-score over nonzero voxels, and nnU-Net v2's
other channel schemes.

``normalization`` is ``plans.normalization``: a scheme per channel and the CT statistics (None without a CT channel).
The MRI rule is the reference v21.10's MONAI ``NormalizeIntensity(nonzero=True, channel_wise=True)``: statistics over
each channel's nonzero voxels, only those voxels change, zeros stay 0, a zero standard deviation divides by 1.
v2's schemes (nnunetv2/preprocessing/normalization/default_normalization_schemes.py): ``"nonorm"`` keeps the values
(a binary prior or a mask as an input channel), ``"rescale_to_0_1"`` maps each case's range to [0, 1],
``"rgb_to_0_1"`` divides 8-bit values by 255.
"""

from __future__ import annotations

import numpy as np

from nnunet_ray.planning.schema import Normalization


def _ct(image: np.ndarray, normalization: Normalization, channel: int) -> np.ndarray:
    low, high, mean, std = normalization.ct_statistics(channel)
    for key, value in zip(("ct_min", "ct_max", "ct_mean", "ct_std"), (low, high, mean, std)):
        if value is None:
            raise ValueError(f"CT normalization needs {key} in the plans' normalization")
    assert mean is not None and std is not None  # checked just above
    clipped = np.clip(image, low, high)
    return ((clipped - float(mean)) / (float(std) or 1.0)).astype(np.float32)


def _mri(channel: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    out = channel.astype(np.float32, copy=True)
    mask = out != 0 if mask is None else mask
    if mask.any():
        values = out[mask].astype(np.float64)  # float64 sums: large volumes lose precision in float32
        std = values.std() or 1.0  # population std (ddof=0), as torch/MONAI with unbiased=False
        out[mask] = (values - values.mean()) / std
    return out


def channel_schemes(normalization: Normalization, n_channels: int) -> list[str]:
    """The scheme of each of ``n_channels`` channels.

    Raises:
        ValueError: the plans list another number of channels.
    """
    channels = normalization.channels
    if len(channels) != n_channels:
        raise ValueError(f"plans normalise {len(channels)} channels, the image has {n_channels}")
    return list(channels)


def normalize(image: np.ndarray, normalization: Normalization, *,
              nonzero_masks: np.ndarray | None = None) -> np.ndarray:
    """Normalise each channel with its scheme from the plans.

    Args:
        image: ``(C, Z, Y, X)`` intensities (Hounsfield units for CT channels).
        normalization: ``plans.normalization``.
        nonzero_masks: MRI channels only: ``(C, Z, Y, X)`` bool, channel c's voxels to take statistics over and
            normalise, instead of that channel's own ``!= 0``; voxels outside keep their value. Each channel has
            its own mask, as MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)``.

    Returns:
        ``(C, Z, Y, X)`` float32, a new array.

    Raises:
        ValueError: unknown scheme, missing CT statistics, or a mask of the wrong shape.
    """
    if nonzero_masks is not None and nonzero_masks.shape != image.shape:
        raise ValueError(f"nonzero_masks shape {nonzero_masks.shape} != image shape {image.shape}")
    out = np.empty(image.shape, np.float32)
    for c, scheme in enumerate(channel_schemes(normalization, image.shape[0])):
        if scheme == "ct":
            out[c] = _ct(image[c], normalization, c)
        elif scheme == "mri":
            out[c] = _mri(image[c], None if nonzero_masks is None else nonzero_masks[c])
        elif scheme in CASE_SCHEMES:
            out[c] = CASE_SCHEMES[scheme](image[c].astype(np.float32))
        else:
            raise ValueError(f"unknown normalization scheme {scheme!r} (expected one of {SCHEMES})")
    return out


def _rescale_to_0_1(channel: np.ndarray) -> np.ndarray:
    shifted = channel - channel.min()
    return shifted / max(float(shifted.max()), 1e-8)


def _rgb_to_0_1(channel: np.ndarray) -> np.ndarray:
    # Clipped, where v2 asserts the range: here the channel is already resampled, and a cubic spline overshoots.
    return np.clip(channel, 0.0, 255.0) / 255.0


# Schemes that need nothing but the case's own channel.
CASE_SCHEMES = {"nonorm": lambda channel: channel, "rescale_to_0_1": _rescale_to_0_1, "rgb_to_0_1": _rgb_to_0_1}
SCHEMES = ("ct", "mri", *CASE_SCHEMES)
