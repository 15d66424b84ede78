"""The data types every stage shares: a case's files, a dataset's description, a volume with geometry.

Axes inside the code are ``(C, Z, Y, X)`` with Z the NIfTI third axis; spacings are ``(z, y, x)`` in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """The dataset folder or its dataset.json is unusable; the message says what to fix."""


class CaseError(ValueError):
    """One case is unusable. The message starts with the case id and names the problem.

    Raised per case so a bad case never stops the others.
    """

    def __init__(self, case_id: str, problem: str):
        super().__init__(f"{case_id}: {problem}")
        self.case_id = case_id
        self.problem = problem


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's files are.

    Attributes:
        case_id: stable identifier (file name without extension / channel suffix), e.g. ``BRATS_001``.
        images: one path for a 3D or 4D NIfTI (MSD v1), or one path per channel (nnU-Net v2 ``_0000``...).
        label: the label map, or None for test cases.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """A raw dataset folder as described by its dataset.json.

    Attributes:
        name: the folder name, e.g. ``Task04_Hippocampus``; names the preprocessed folder.
        root: absolute path of the folder.
        modalities: channel names in channel order, e.g. ``("FLAIR", "T1w", "t1gd", "T2w")``.
        labels: class index -> name, background 0 included.
        training: labelled cases, sorted by case id.
        test: unlabelled cases, sorted by case id.
    """

    name: str
    root: Path
    modalities: tuple[str, ...]
    labels: dict[int, str]
    training: tuple[CaseFiles, ...]
    test: tuple[CaseFiles, ...] = ()

    @property
    def is_ct(self) -> bool:
        """CT normalisation (clip + dataset z-score) is used when the first channel is exactly 'CT'."""
        return self.modalities[0].upper() == "CT"

    @property
    def n_classes(self) -> int:
        """Number of output classes, background included."""
        return len(self.labels)

    @property
    def task_number(self) -> int | None:
        """NN of a ``TaskNN_*`` folder name, else None (the MSD presets match the full task name, not NN)."""
        head = self.name.split("_", 1)[0]
        if head.startswith("Task") and head[4:].isdigit():
            return int(head[4:])
        return None


@dataclass
class Volume:
    """A voxel array with the geometry needed to write predictions back onto the input grid.

    Attributes:
        array: ``(C, Z, Y, X)``; float32 for images, uint8 for labels (C = 1).
        spacing: voxel size in mm, ``(z, y, x)``.
        affine: the NIfTI 4x4 voxel-to-world matrix of the original file (voxel axes x, y, z).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]
