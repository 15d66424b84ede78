"""Writers of tiny preprocessed cases (the preprocessing contract's file format) for the loading tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnunet_ray.preprocessing.record import CaseProperties, write_case_record


def write_case(folder: Path, case_id: str, image: np.ndarray, label: np.ndarray) -> None:
    """Saves ``<case>_x.npy`` (C, Z, Y, X) float32, ``<case>_y.npy`` (1, Z, Y, X) uint8 and ``<case>.json``
    with every foreground voxel of each class as stored coordinates."""
    np.save(folder / f"{case_id}_x.npy", image.astype(np.float32))
    np.save(folder / f"{case_id}_y.npy", label.astype(np.uint8))
    classes = [int(c) for c in np.unique(label) if c > 0]
    write_case_record(folder, CaseProperties.unprocessed(
        case_id, image.shape[1:], foreground={str(c): np.argwhere(label[0] == c).tolist() for c in classes}))


@pytest.fixture
def case_writer(tmp_path):
    """``case_writer(case_id, image, label)`` writes a case into ``tmp_path`` and returns the folder."""
    def write(case_id: str, image: np.ndarray, label: np.ndarray) -> Path:
        write_case(tmp_path, case_id, image, label)
        return tmp_path
    return write


@pytest.fixture
def indexed_cases(tmp_path):
    """``indexed_cases(n, shape, channels=2)``: n cases whose channel 0 is the constant case index (so a
    patch tells which case it came from) and whose label is a 2-voxel cube of class 1 at a per-case place."""
    def write(n: int, shape: tuple[int, int, int], channels: int = 2) -> tuple[Path, list[str]]:
        rng = np.random.default_rng(0)
        ids = []
        for i in range(n):
            image = rng.standard_normal((channels, *shape)).astype(np.float32)
            image[0] = i
            label = np.zeros((1, *shape), np.uint8)
            corner = [int(rng.integers(0, s - 2)) for s in shape]
            label[(0, *[slice(c, c + 2) for c in corner])] = 1
            write_case(tmp_path, f"case_{i}", image, label)
            ids.append(f"case_{i}")
        return tmp_path, ids
    return write
