"""The sliding-window options, declared once: validation while training (train, cv, tune), predict, evaluate --cv.

Every config that predicts whole volumes inherits ``SlidingWindow``, so its fields become that command's flags, its
``config.json`` keys and its resume-table entries; ``window()`` hands the group on, and the sliding-window code reads
the fields from it. A new option is one field here plus the code that uses it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nnunet_ray.config.base import _check, opt

BLENDS = ("gaussian", "constant")


@dataclass(frozen=True)
class SlidingWindow:
    """Sliding window: how a whole volume is predicted window by window (the reference's inference options)."""

    tta: bool = opt(False, "flip test-time augmentation (8 passes in 3D, 4 in 2D); in training: of validation")
    overlap: float = opt(0.5, "sliding-window overlap (fraction of the window)")
    blend: str = opt("gaussian", "sliding-window blending of overlapping windows", choices=BLENDS)
    val_batch_size: int = opt(4, "sliding-window batch size (windows per forward pass)",
                              aliases=("--sw-batch-size",))

    def window(self) -> SlidingWindow:
        """These options alone, from any config that inherits them."""
        return SlidingWindow(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SlidingWindow)})

    def check_window(self) -> None:
        """Raises ConfigError naming the flag of a window option out of range."""
        _check(0 <= self.overlap < 1, "overlap", "must be in [0, 1)")
        _check(self.val_batch_size >= 1, "val_batch_size", "must be >= 1")
