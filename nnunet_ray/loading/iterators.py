"""Everything the loaders need that is plain numpy: case checks, crop tables, eval and predict loaders.

Nothing here imports DALI, so evaluation and inference code can use ``eval_loader`` / ``predict_loader``
without pulling DALI in. Files read (see the preprocessing contract): ``<case>_x.npy`` float32
``(C, Z, Y, X)``, ``<case>_y.npy`` uint8 ``(1, Z, Y, X)`` and ``<case>.json`` (``"shape"`` and
``"foreground"``: class -> ``[[z, y, x], ...]`` final array coordinates).

Why eval/predict do not use DALI: DALI readers pad a shard with repeated samples and split the list into
contiguous chunks, while validation must see each case of ``case_ids[rank::world_size]`` exactly once.
Whole volumes, batch 1 and no augmentation leave nothing for DALI to speed up, so they are read with numpy
(memory-mapped header check, one read per case) and handed over as torch tensors without a copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnunet_ray.data.records import RecordError
from nnunet_ray.data.types import CaseError
from nnunet_ray.preprocessing.record import CaseProperties, read_case_record, record_name

# Crop table, one int32 vector per case, read by a DALI reader in lockstep with the arrays:
#   [Z, Y, X, has_fg, K, off_0, n_0, ..., off_{K-1}, n_{K-1}, z, y, x, z, y, x, ...]
# K classes with stored foreground coordinates; class k's n_k coordinates start at index off_k.
# A case without foreground gets K = 1 with the volume centre as its only coordinate and has_fg = 0.
TABLE_HEADER = 5


def shard_cases(case_ids: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The rank's share of ``case_ids``: every ``world_size``-th case from ``rank`` (no drop, no duplicate)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
    return list(case_ids)[rank::world_size]


def batches_per_epoch(n_cases: int, world_size: int, per_batch: int) -> int:
    """Training batches per epoch, the same on every rank: ``ceil(ceil(n_cases / world_size) / per_batch)``.

    ``per_batch`` is the batch size in 3D and ``nvol`` (volumes per batch) in 2D. Using the largest shard
    keeps the step count equal across DDP ranks even when ``n_cases % world_size != 0``.
    """
    return math.ceil(math.ceil(n_cases / world_size) / per_batch)


def case_paths(data_dir: Path, case_id: str) -> dict[str, Path]:
    """The preprocessed files of one case: keys ``image``, ``label``, ``properties``."""
    return {"image": data_dir / f"{case_id}_x.npy", "label": data_dir / f"{case_id}_y.npy",
            "properties": data_dir / record_name(case_id)}


def read_properties(data_dir: Path, case_id: str) -> CaseProperties:
    """The case's ``<case>.json``; raises CaseError when it is missing or not a case record."""
    try:
        return read_case_record(data_dir, case_id)
    except FileNotFoundError:
        raise CaseError(case_id, f"missing {record_name(case_id)} in {data_dir}; run preprocess first") from None
    except RecordError as err:
        raise CaseError(case_id, str(err)) from None


def _npy_shape(path: Path, case_id: str) -> tuple[int, ...]:
    """Shape from the .npy header only (memory-mapped, no data read)."""
    if not path.exists():
        raise CaseError(case_id, f"missing {path.name} in {path.parent}; run preprocess first")
    return tuple(np.load(path, mmap_mode="r").shape)


def check_case(data_dir: Path, case_id: str, *, in_channels: int | None = None) -> CaseProperties:
    """Checks that the case's image, label and properties agree and returns the properties.

    Raises:
        CaseError: a file is missing, the image is not (C, Z, Y, X) with ``in_channels`` channels, the
            label is not (1, Z, Y, X), or the json ``shape`` differs from the arrays.
    """
    paths = case_paths(data_dir, case_id)
    props = read_properties(data_dir, case_id)
    image = _npy_shape(paths["image"], case_id)
    label = _npy_shape(paths["label"], case_id)
    if len(image) != 4:
        raise CaseError(case_id, f"image array has shape {image}, expected (C, Z, Y, X)")
    if in_channels is not None and image[0] != in_channels:
        raise CaseError(case_id, f"image has {image[0]} channels, plans say {in_channels}")
    if label != (1, *image[1:]):
        raise CaseError(case_id, f"label shape {label} does not match image shape {image}")
    if tuple(props.shape) != tuple(image[1:]):
        raise CaseError(case_id, f"{record_name(case_id)} shape {list(props.shape)} differs from the arrays "
                                 f"{image[1:]}")
    return props


def crop_table(case_id: str, shape: Sequence[int], foreground: dict[str, list]) -> np.ndarray:
    """Packs a case's shape and stored foreground coordinates into the int32 crop table (layout above).

    Args:
        case_id: for error messages.
        shape: spatial shape ``(Z, Y, X)`` of the preprocessed arrays.
        foreground: class (str) -> list of ``[z, y, x]`` voxel coordinates; classes with no
            coordinates do not count as present.

    Returns:
        1-D int32 array; sampling a class uniformly, then one of its coordinates uniformly, reproduces the
        foreground crop rule.

    Raises:
        CaseError: a coordinate is not a 3-vector inside ``shape``.
    """
    coords = []
    for cls in sorted(foreground, key=int):
        pts = np.asarray(foreground[cls], dtype=np.int64).reshape(-1, 3) if foreground[cls] else None
        if pts is None:
            continue
        if (pts < 0).any() or (pts >= np.asarray(shape)).any():
            raise CaseError(case_id, f"foreground coordinates of class {cls} lie outside the shape {list(shape)}")
        coords.append(pts)
    has_fg = int(bool(coords))
    if not coords:  # a valid dummy so the in-pipeline lookup never indexes out of range
        coords = [np.asarray([[s // 2 for s in shape]], dtype=np.int64)]
    header = [*shape, has_fg, len(coords)]
    offset = TABLE_HEADER + 2 * len(coords)
    for pts in coords:
        header += [offset, len(pts)]
        offset += 3 * len(pts)
    return np.concatenate([np.asarray(header, np.int64)] + [p.ravel() for p in coords]).astype(np.int32)


class EvalLoader:
    """Whole preprocessed volumes of the rank's share, one case per item, in ``case_ids`` order.

    Re-iterable (one pass per ``iter``); ``len`` is the number of cases of this rank.
    Items: ``{"case_id": str, "image": (1, C, Z, Y, X) float32, "label": (1, 1, Z, Y, X) uint8}``
    (``"properties"``, the case's ``CaseProperties``, instead of ``"label"`` when built with ``with_label=False``).
    """

    def __init__(self, data_dir: Path, case_ids: Sequence[str], *, with_label: bool = True):
        self.data_dir = Path(data_dir)
        self.case_ids = list(case_ids)
        self.with_label = with_label

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[dict]:
        for case_id in self.case_ids:
            yield self._load(case_id)

    def _load(self, case_id: str) -> dict:
        paths = case_paths(self.data_dir, case_id)
        item: dict[str, Any] = {"case_id": case_id,
                                "image": torch.from_numpy(_load_array(paths["image"], case_id, np.float32))[None]}
        if self.with_label:
            item["label"] = torch.from_numpy(_load_array(paths["label"], case_id, np.uint8))[None]
        else:
            item["properties"] = read_properties(self.data_dir, case_id)
        return item


def _load_array(path: Path, case_id: str, dtype: type) -> np.ndarray:
    if not path.exists():
        raise CaseError(case_id, f"missing {path.name} in {path.parent}; run preprocess first")
    array = np.load(path)
    if array.ndim != 4 or array.dtype != dtype:
        raise CaseError(case_id, f"{path.name} is {array.dtype} {array.shape}, expected {np.dtype(dtype)} 4-D")
    return array


def eval_loader(data_dir: Path, case_ids: Sequence[str], *, rank: int = 0, world_size: int = 1) -> EvalLoader:
    """Validation cases of this rank, ``case_ids[rank::world_size]``, as whole volumes with labels.

    Args:
        data_dir: preprocessed folder (``<case>_x.npy``, ``<case>_y.npy``).
        case_ids: all validation cases (the same list on every rank).
        rank: global rank; world_size: number of ranks.

    Returns:
        EvalLoader yielding ``{"case_id", "image": (1, C, Z, Y, X) float32, "label": (1, 1, Z, Y, X) uint8}``
        CPU tensors. A missing or malformed file raises CaseError when its case is reached.
    """
    return EvalLoader(Path(data_dir), shard_cases(case_ids, rank, world_size))


def predict_loader(data_dir: Path, case_ids: Sequence[str], *, rank: int = 0, world_size: int = 1) -> EvalLoader:
    """Test cases of this rank as whole volumes with their properties (no label needed).

    Returns:
        EvalLoader yielding ``{"case_id", "image": (1, C, Z, Y, X) float32, "properties"}`` where
        ``properties`` is the case's ``<case>.json`` (affine, crop box, pads, ... for writing back).
    """
    return EvalLoader(Path(data_dir), shard_cases(case_ids, rank, world_size), with_label=False)
