"""Geometry rules shared by planning and preprocessing: the nonzero box and the anisotropic (coarse) axis.

One definition each, so the fingerprint's cropped shapes and the planner's anisotropy agree with what
preprocessing actually does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = list[list[int]]
ANISOTROPY_RATIO = 3.0  # max/min spacing from which the coarse axis is resampled separately (reference value)


def nonzero_box(image: np.ndarray) -> Box:
    """Half-open bounding box of the voxels where any channel is nonzero.

    Foreground is ``!= 0`` (the reference's MONAI default is ``> 0``), so CT volumes whose body is mostly
    negative Hounsfield units are not cropped to their few positive voxels.

    Args:
        image: ``(C, Z, Y, X)`` array.

    Returns:
        ``[[z0, z1], [y0, y1], [x0, x1]]`` in voxel coordinates, ``z1`` exclusive.

    Raises:
        ValueError: ``"image has no nonzero voxel"`` (the caller names the case), or a wrong number of axes.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {tuple(image.shape)}")
    mask = np.any(image != 0, axis=0)  # (Z, Y, X)
    box: Box = []
    for axis in range(3):
        # Project the mask onto one axis: which slices along it hold any foreground.
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        if hits.size == 0:
            raise ValueError("image has no nonzero voxel")
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def coarse_axis(spacing: Sequence[float] | np.ndarray, threshold: float = ANISOTROPY_RATIO) -> int | None:
    """The one axis with the largest spacing when ``max / min >= threshold``, else None.

    Two equally coarse axes leave no single through-plane axis, so they count as None (a plain 3D resample).

    Args:
        spacing: voxel size in mm, ``(z, y, x)``.
        threshold: max/min ratio from which a spacing counts as anisotropic.

    Returns:
        0, 1 or 2 (an index into ``(z, y, x)``), or None.
    """
    values = np.asarray(spacing, float)
    if values.max() / values.min() < threshold:
        return None
    coarse = np.flatnonzero(np.isclose(values, values.max()))
    return int(coarse[0]) if coarse.size == 1 else None
