"""Training augmentations as DALI graph pieces: zoom, flips, noise, blur, brightness, contrast.

The reference's chain (NVIDIA nnU-Net v21.10, ``dali_loader.py``) with its probabilities, but each
"with probability p" is a per-sample DALI conditional (``enable_conditionals=True``) instead of
``coin * aug + (1 - coin) * x``: the augmented branch is only computed for the samples that take it, and
samples that skip it are left bit-exact.

Layouts: 3D patches are ``CDHW``; 2D batches are stacks of slices, ``FCHW`` (F = slices of one volume),
so resize, blur and flips act in-plane on every slice (the reference blurred across slices too). The
random parameters are drawn per sample, i.e. per patch in 3D and per volume's stack of slices in 2D.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types


@dataclass(frozen=True)
class Augmentations:
    """Probabilities (per sample) and parameter ranges of the training augmentations.

    Defaults are the reference's. A probability of 0 leaves the step out of the pipeline.
    """

    zoom: float = 0.15  # crop the central s * patch and resize it back (cubic image, nearest label)
    zoom_range: tuple[float, float] = (0.7, 1.0)  # s ~ U(lo, hi); s < 1 zooms in
    flip: float = 0.33  # per spatial axis (D, H, W in 3D; H, W in 2D), image and label together
    noise: float = 0.15  # add N(0, sigma^2) to the image
    noise_std: tuple[float, float] = (0.0, 0.33)  # sigma ~ U(lo, hi)
    blur: float = 0.15  # Gaussian blur of the image (spatial axes only)
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # sigma ~ U(lo, hi), voxels
    brightness: float = 0.15  # multiply the image by U(lo, hi)
    brightness_range: tuple[float, float] = (0.7, 1.3)
    contrast: float = 0.15  # multiply by U(lo, hi), then clip to the sample's min / max before the step
    contrast_range: tuple[float, float] = (0.65, 1.5)

    @classmethod
    def none(cls) -> "Augmentations":
        """No augmentation at all: the train pipeline only crops."""
        return cls(zoom=0.0, flip=0.0, noise=0.0, blur=0.0, brightness=0.0, contrast=0.0)

    def spatial_only(self) -> "Augmentations":
        """The same zoom and flips, without any intensity change (keeps label == f(image) checkable)."""
        return replace(self, noise=0.0, blur=0.0, brightness=0.0, contrast=0.0)


def _coin(p: float):
    return fn.random.coin_flip(probability=p, dtype=types.DALIDataType.BOOL)


def _uniform(bounds: tuple[float, float]):
    return fn.random.uniform(range=list(bounds))


def _zoom(image, label, aug: Augmentations, patch: Sequence[int]):
    """Crop the central ``s * patch`` window (the slice axis of a 2D stack is not scaled) and resize back."""
    if _coin(aug.zoom):
        scale = _uniform(aug.zoom_range)
        names = ("crop_d", "crop_h", "crop_w")[-len(patch):]
        window = {name: scale * float(size) for name, size in zip(names, patch)}
        image = fn.resize(fn.crop(image, **window), size=list(patch), interp_type=types.DALIInterpType.INTERP_CUBIC,
                          antialias=False)
        label = fn.resize(fn.crop(label, **window), size=list(patch), interp_type=types.DALIInterpType.INTERP_NN,
                          antialias=False)
    return image, label


def _flip(image, label, aug: Augmentations, dim: int):
    """Independent coin per spatial axis; the same flips for image and label."""
    axes: dict[str, Any] = {
        "horizontal": fn.random.coin_flip(probability=aug.flip, dtype=types.DALIDataType.INT32),
        "vertical": fn.random.coin_flip(probability=aug.flip, dtype=types.DALIDataType.INT32)}
    if dim == 3:
        axes["depthwise"] = fn.random.coin_flip(probability=aug.flip, dtype=types.DALIDataType.INT32)
    return fn.flip(image, **axes), fn.flip(label, **axes)


def _intensity(image, aug: Augmentations):
    """Noise, blur, brightness and contrast, each on its own per-sample coin, in the reference's order."""
    if aug.noise > 0:
        if _coin(aug.noise):
            image = image + fn.random.normal(image, stddev=_uniform(aug.noise_std))
    if aug.blur > 0:
        if _coin(aug.blur):
            image = fn.gaussian_blur(image, sigma=_uniform(aug.blur_sigma))
    if aug.brightness > 0:
        if _coin(aug.brightness):
            image = image * _uniform(aug.brightness_range)
    if aug.contrast > 0:
        if _coin(aug.contrast):
            low, high = fn.reductions.min(image), fn.reductions.max(image)
            image = dmath.clamp(image * _uniform(aug.contrast_range), low, high)
    return image


def augment(image, label, aug: Augmentations, *, patch: Sequence[int]):
    """Applies ``aug`` to a batch of patches inside a DALI pipeline with conditionals enabled.

    Args:
        image: DataNode, float32 ``CDHW`` (3D) or ``FCHW`` (2D stack of slices).
        label: DataNode, uint8, same layout and spatial shape as ``image`` with C = 1.
        aug: probabilities and ranges.
        patch: spatial patch size, ``(D, H, W)`` in 3D or ``(H, W)`` in 2D.

    Returns:
        ``(image, label)`` DataNodes with unchanged shapes, dtypes and layouts.
    """
    if aug.zoom > 0:
        image, label = _zoom(image, label, aug, patch)
    if aug.flip > 0:
        image, label = _flip(image, label, aug, len(patch))
    return _intensity(image, aug), label
