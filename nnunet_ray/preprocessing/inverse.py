"""Map a prediction from the preprocessed grid back onto the original image grid.

The inverse of :mod:`nnunet_ray.preprocessing.case`: remove the padding, resample the class probabilities back
to the cropped original shape (linear, the coarse axis by nearest neighbour as on the way in), take the argmax
and place it at the crop box inside a zero volume of the original shape. The result can be written with the
original affine (``props.affine``) and lies exactly on the input image's voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import EllipsisType

import numpy as np

from nnunet_ray.preprocessing.record import CaseProperties
from nnunet_ray.preprocessing.resample import resample_image


def unpad(array: np.ndarray, pad: Sequence[Sequence[int]]) -> np.ndarray:
    """Remove ``[[before, after]] * 3`` voxels from the last three axes of ``array`` (``(..., Z, Y, X)``)."""
    slices = tuple(slice(before, n - after) for (before, after), n in zip(pad, array.shape[-3:]))
    index: tuple[EllipsisType | slice, ...] = (..., *slices)
    return array[index]


def restore_prediction(probs: np.ndarray, props: CaseProperties) -> np.ndarray:
    """Turn class probabilities on the preprocessed grid into a label map on the original grid.

    Args:
        probs: ``(K, Z, Y, X)`` class probabilities (or logits) of shape ``props.shape``, K = n_classes.
        props: the case's ``<case>.json``, or ``preprocess_for_prediction``'s properties.

    Returns:
        ``(Z, Y, X)`` uint8 class indices of shape ``props.original_shape``; 0 outside the crop box.

    Raises:
        ValueError: ``probs`` does not have the preprocessed shape.
    """
    back, box = _restore_cropped(probs, props)
    label = np.zeros(props.original_shape, np.uint8)
    (z0, z1), (y0, y1), (x0, x1) = box
    label[z0:z1, y0:y1, x0:x1] = np.argmax(back, axis=0)
    return label


def restore_probabilities(probs: np.ndarray, props: CaseProperties) -> np.ndarray:
    """Class probabilities on the preprocessed grid -> class probabilities on the original grid.

    Each class is restored separately (unpad, linear resample to the cropped shape, the coarse axis by nearest
    neighbour, as on the way in), so members planned at different spacings (2D and 3D) can be averaged on the
    original grid. Outside the crop box the image was empty: background has probability 1 there.

    Args:
        probs: ``(K, Z, Y, X)`` probabilities of shape ``props.shape``.
        props: the case's properties (as for :func:`restore_prediction`).

    Returns:
        ``(K, *props.original_shape)`` float32; each voxel's classes still sum to 1 (linear resampling keeps
        convex combinations).

    Raises:
        ValueError: ``probs`` does not have the preprocessed shape.
    """
    back, box = _restore_cropped(probs, props)
    out = np.zeros((back.shape[0], *props.original_shape), np.float32)
    out[0] = 1.0
    (z0, z1), (y0, y1), (x0, x1) = box
    out[:, z0:z1, y0:y1, x0:x1] = back
    return out


def _restore_cropped(probs: np.ndarray, props: CaseProperties) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Unpad ``(K, *props.shape)`` scores and resample them to the crop box's shape with the case's stored
    coarse axis; returns them with the crop box.

    Raises:
        ValueError: ``probs`` does not have the preprocessed shape.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 4 or tuple(probs.shape[1:]) != tuple(props.shape):
        raise ValueError(f"probs shape {probs.shape} is not (K, *{list(props.shape)})")
    box = props.crop_box
    cropped_shape = [b - a for a, b in box]
    return resample_image(unpad(probs, props.pad), cropped_shape, aniso_axis=props.anisotropic_axis, order=1), box
