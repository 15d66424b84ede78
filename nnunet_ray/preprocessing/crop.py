"""Crop a case to the bounding box of its nonzero image voxels.

The reference (MONAI ``CropForegroundd`` default) keeps voxels ``> 0``; here foreground is ``!= 0`` in any
channel, so CT volumes whose body is mostly negative Hounsfield units are not cropped to the few positive
voxels. There is no margin, as in the reference.
"""

from __future__ import annotations

import numpy as np

Box = list[list[int]]


def nonzero_box(image: np.ndarray) -> Box:
    """Half-open bounding box of the voxels where any channel is nonzero.

    Args:
        image: ``(C, Z, Y, X)`` array.

    Returns:
        ``[[z0, z1], [y0, y1], [x0, x1]]`` in voxel coordinates, ``z1`` exclusive.

    Raises:
        ValueError: ``"image has no nonzero voxel"`` (the caller names the case).
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


def crop_to_box(array: np.ndarray, box: Box) -> np.ndarray:
    """Crop the last three (spatial) axes of ``array`` to ``box``.

    Args:
        array: ``(..., Z, Y, X)``, e.g. an image ``(C, Z, Y, X)`` or a label ``(1, Z, Y, X)``.
        box: half-open ``[[z0, z1], [y0, y1], [x0, x1]]`` as returned by :func:`nonzero_box`.

    Returns:
        A view ``(..., z1 - z0, y1 - y0, x1 - x0)``.
    """
    (z0, z1), (y0, y1), (x0, x1) = box
    return array[..., z0:z1, y0:y1, x0:x1]
