"""Crop a case to the bounding box of its nonzero image voxels (``nonzero_box``, see data/geometry.py).

There is no margin, as in the reference.
"""

from __future__ import annotations

import numpy as np

from nnunet_ray.data.geometry import Box, nonzero_box

__all__ = ["Box", "crop_to_box", "nonzero_box"]


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
