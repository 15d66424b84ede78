"""Post-processing chosen from cross-validation: keep only the largest connected component of some classes.

nnU-Net v2's step (``postprocessing/remove_connected_components.py``): for a class whose predictions are one
organ, stray islands elsewhere are false positives; removing them (setting them to background) helps that class.
Whether it helps is decided per class on the cross-validation predictions (``distributed/cv_eval.py``), and the
classes where it did are applied at prediction time (``nnunet-ray predict --postprocess``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage as ndi

FULL_CONNECTIVITY = ndi.generate_binary_structure(3, 3)  # 26 neighbours, as skimage.measure.label's default


def keep_largest_component(label: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Set every voxel of ``classes`` outside that class's largest connected component to background.

    Args:
        label: ``(Z, Y, X)`` integer class map.
        classes: the classes to clean; others are left as they are.

    Returns:
        A new class map of the same shape and dtype.
    """
    out = np.array(label, copy=True)
    for c in classes:
        components, count = ndi.label(out == c, structure=FULL_CONNECTIVITY)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]  # voxels per component, background excluded
            out[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
    return out
