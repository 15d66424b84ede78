"""Resample images and label maps to a target spacing, as nnU-Net does.

Images use cubic splines, label maps a linear resize of each class mask thresholded at 0.5. When the source or
target spacing is anisotropic (max/min >= 3), the coarse axis is handled separately: slices across it are resized
in-plane, then that axis is resized with nearest neighbour so blurry through-plane interpolation does not smear
thick slices. Unlike the reference, the coarse axis is detected (not assumed to be axis 0) and new shapes are
rounded, not truncated.

All resizes map voxel centres onto voxel centres (``scipy.ndimage.zoom(grid_mode=True)``, like
``skimage.transform.resize``) and extend edges by repetition (mode ``nearest``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from nnunet_ray.data.geometry import ANISOTROPY_RATIO, coarse_axis

Shape3 = tuple[int, int, int]


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> Shape3:
    """Spatial shape after resampling from ``spacing`` to ``target``.

    Args:
        shape: ``(Z, Y, X)`` voxels.
        spacing: current voxel size in mm, ``(z, y, x)``.
        target: wanted voxel size in mm, ``(z, y, x)``.

    Returns:
        ``round(shape * spacing / target)`` per axis, at least 1.
    """
    new = np.round(np.asarray(shape, float) * np.asarray(spacing, float) / np.asarray(target, float))
    return tuple(max(1, int(n)) for n in new)  # type: ignore[return-value]


def anisotropic_axis(spacing: Sequence[float], target: Sequence[float],
                     threshold: float = ANISOTROPY_RATIO) -> int | None:
    """The axis to resample separately, or None for a plain 3D resample.

    The source spacing decides first (thick slices in the input); otherwise the target spacing (thick slices
    wanted). Ties between two coarse axes give None.

    Args:
        spacing: source voxel size in mm, ``(z, y, x)``.
        target: target voxel size in mm, ``(z, y, x)``.
        threshold: max/min spacing ratio from which a spacing counts as anisotropic.

    Returns:
        0, 1 or 2 (an index into ``(z, y, x)``), or None.
    """
    if (axis := coarse_axis(spacing, threshold)) is not None:
        return axis
    return coarse_axis(target, threshold)


def _zoom(volume: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """Resize a 2D/3D array to ``new_shape`` with spline ``order``, centres aligned, edges repeated."""
    if tuple(volume.shape) == tuple(new_shape):
        return volume
    factors = [n / o for n, o in zip(new_shape, volume.shape)]
    return ndi.zoom(volume, factors, order=order, mode="nearest", grid_mode=True)


def _inplane(volume: np.ndarray, new_shape: Sequence[int], axis: int, order: int) -> np.ndarray:
    """Resize each slice across ``axis`` with spline ``order``; ``new_shape[axis]`` must equal the input's.

    Slices are zoomed one by one: a 3D zoom with factor 1 on ``axis`` gives the same values but evaluates
    a 3D spline (about 4x slower for cubic).
    """
    plane = [n for a, n in enumerate(new_shape) if a != axis]
    moved = np.moveaxis(volume, axis, 0)  # (S, P, Q): S slices across the coarse axis
    return np.moveaxis(np.stack([_zoom(s, plane, order) for s in moved]), 0, axis)


def _with_axis(new_shape: Sequence[int], source_shape: Sequence[int], axis: int) -> list[int]:
    """``new_shape`` with ``axis`` kept at its source size: the shape after the in-plane step."""
    shape = list(new_shape)
    shape[axis] = source_shape[axis]
    return shape


def _resize(volume: np.ndarray, new_shape: Sequence[int], order: int, aniso_axis: int | None) -> np.ndarray:
    if aniso_axis is None:
        return _zoom(volume, new_shape, order)
    inplane = _inplane(volume, _with_axis(new_shape, volume.shape, aniso_axis), aniso_axis, order)
    return _zoom(inplane, new_shape, 0)  # nearest neighbour along the coarse axis


def resample_image(
    image: np.ndarray, new_shape: Sequence[int], *, aniso_axis: int | None, order: int = 3
) -> np.ndarray:
    """Spline resample of every channel to ``new_shape`` (cubic for images, linear for class probabilities).

    Args:
        image: ``(C, Z, Y, X)`` float.
        new_shape: target spatial shape ``(Z, Y, X)``.
        aniso_axis: from :func:`anisotropic_axis`; when set, ``order`` in-plane then nearest along that axis.
        order: spline order, 3 (cubic) for images, 1 (linear) for probabilities.

    Returns:
        ``(C, *new_shape)`` float32 (``image`` itself, as float32, when the shape already matches).
    """
    image = image.astype(np.float32, copy=False)
    if tuple(image.shape[1:]) == tuple(new_shape):
        return image
    # Clip to each channel's input range (skimage's clip=True): cubic splines overshoot at edges.
    return np.stack([np.clip(_resize(channel, new_shape, order, aniso_axis), channel.min(), channel.max())
                     for channel in image])


def resample_mask(mask: np.ndarray, new_shape: Sequence[int], *, aniso_axis: int | None) -> np.ndarray:
    """Nearest-neighbour resample of a boolean ``(Z, Y, X)`` mask (e.g. the image's nonzero region).

    Returns:
        ``new_shape`` bool.
    """
    if tuple(mask.shape) == tuple(new_shape):
        return mask.astype(bool, copy=False)
    return _resize(mask.astype(np.float32), new_shape, 0, aniso_axis) > 0.5


def resample_label(
    label: np.ndarray, new_shape: Sequence[int], *, n_classes: int, aniso_axis: int | None
) -> np.ndarray:
    """Resample a label map class by class (nnU-Net's rule).

    Each class mask ``label == c`` is resized linearly and voxels where it is >= 0.5 get class ``c``; later
    classes overwrite earlier ones. With ``aniso_axis`` the masks are resized in-plane and the coarse axis
    takes the nearest slice.

    Args:
        label: ``(1, Z, Y, X)`` integer class indices in ``[0, n_classes)``.
        new_shape: target spatial shape ``(Z, Y, X)``.
        n_classes: number of classes, background included.
        aniso_axis: from :func:`anisotropic_axis`, or None.

    Returns:
        ``(1, *new_shape)`` uint8.
    """
    label = label.astype(np.uint8, copy=False)
    if tuple(label.shape[1:]) == tuple(new_shape):
        return label
    source = label[0]
    # With a coarse axis the masks are resized in-plane first; that axis follows on the class map.
    plane_shape = new_shape if aniso_axis is None else _with_axis(new_shape, source.shape, aniso_axis)
    out = np.zeros(plane_shape, np.uint8)
    present = set(np.unique(source).tolist())
    for c in range(1, n_classes):
        if c not in present:
            continue
        mask = (source == c).astype(np.float32)
        if aniso_axis is None:
            resized = _zoom(mask, plane_shape, 1)
        else:
            resized = _inplane(mask, plane_shape, aniso_axis, 1)
        out[resized >= 0.5] = c
    if aniso_axis is not None:
        # Nearest neighbour on the class map equals nearest on each class mask thresholded at 0.5.
        out = _zoom(out, new_shape, 0)
    return out[None]
