"""The DALI training pipeline (3D patches or 2D slice batches) and its PyTorch loader.

Reading: three ``fn.readers.numpy`` in lockstep (same file order, seed, shard and after-epoch shuffle
seed, so sample i of each batch is the same case): the image ``<case>_x.npy``, the label ``<case>_y.npy``
and a small per-case crop table (shape + stored foreground coordinates, written by this module to a
temporary folder; layout in ``iterators.py``). Sharding uses the GLOBAL rank
(``shard_id=rank, num_shards=world_size``) and one shuffle seed on all ranks, so in every reader epoch the
ranks read disjoint parts of one global permutation. Augmentation randomness is seeded per rank.

Foreground-oversampled crop (the issue's rule, not the reference's connected-component rule): with
probability ``oversampling`` (and only if the case has foreground) pick a class uniformly among the
classes with stored coordinates, then one of its stored coordinates uniformly, and centre the patch on it
(clamped into the volume, so the voxel is always inside the patch); otherwise a uniform random patch. In
3D the readers then read only that region of interest (``roi_start``), not the whole volume. In 2D each
volume gives ``batch_size // nvol`` slices, each drawn by the same rule with patch ``(1, Y, X)``.

Epochs: the readers pad every shard to the same number of batches (``pad_last_batch``: a shorter shard
and a last partial batch repeat the shard's last case), so one reader epoch is exactly ``len(loader)``
batches on every rank, DDP ranks take equal step counts, and within each epoch the ranks see disjoint
cases. The DALI stream itself is endless; ``iter(loader)`` yields the next epoch of ``len(loader)``
batches, reshuffled (one global permutation per epoch, epoch 0 included).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
import torch
from nvidia.dali import pipeline_def
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from nnunet_ray.loading.augment import Augmentations, augment
from nnunet_ray.loading.autograph_files import remove_generated_files
from nnunet_ray.loading.iterators import TABLE_HEADER, batches_per_epoch, check_case, crop_table
from nnunet_ray.planning.schema import Plans

remove_generated_files()  # before any pipeline is defined: see autograph_files.py


def _floor_index(u, count):
    """``min(floor(u * count), count - 1)`` as int32: a uniform index in [0, count) from u ~ U[0, 1)."""
    count = fn.cast(count, dtype=types.DALIDataType.FLOAT)
    index = dmath.min(dmath.floor(u * count), count - 1.0)
    return fn.cast(index, dtype=types.DALIDataType.INT32)


def _foreground_voxel(table):
    """A class uniformly among the present ones, then one of its stored coordinates: float32 (3,) z, y, x."""
    k = _floor_index(fn.random.uniform(range=[0.0, 1.0]), table[4])
    offset, count = table[TABLE_HEADER + 2 * k], table[TABLE_HEADER + 2 * k + 1]
    start = offset + 3 * _floor_index(fn.random.uniform(range=[0.0, 1.0]), count)
    return fn.cast(table[start:start + 3], dtype=types.DALIDataType.FLOAT)


def crop_start(table, patch: Sequence[int], oversampling: float):
    """Start corner of one patch per sample, int32 (3,) ``(z, y, x)``, from the case's crop table.

    Foreground (probability ``oversampling`` when the case has any): the patch centred on a stored
    foreground voxel, clamped so the patch stays inside the volume. Otherwise uniform over all starts.
    A volume smaller than the patch gets start 0 (the reader pads).
    """
    size = np.asarray(patch, np.float32)
    shape = fn.cast(table[0:3], dtype=types.DALIDataType.FLOAT)
    last = dmath.max(shape - types.Constant(size), 0.0)  # largest start that keeps the patch inside
    centred = dmath.clamp(_foreground_voxel(table) - types.Constant(size // 2), 0.0, last)
    uniform = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0], shape=[3]) * (last + 1.0)), last)
    use_fg = fn.cast(fn.random.coin_flip(probability=oversampling), dtype=types.DALIDataType.FLOAT) * fn.cast(
        table[3], dtype=types.DALIDataType.FLOAT)
    return fn.cast(use_fg * centred + (1.0 - use_fg) * uniform, dtype=types.DALIDataType.INT32)


def _readers(files: dict[str, list[str]], *, shard: tuple[int, int], seed: int,
             roi_patch: Sequence[int] | None = None, oversampling: float = 0.0):
    """The three lockstep readers (table, image, label).

    With ``roi_patch`` the image and label readers read only the patch chosen by ``crop_start`` from the
    table read in the same step (sample i of every reader is the same case).
    """
    common: dict[str, Any] = dict(shard_id=shard[0], num_shards=shard[1], seed=seed, shuffle_after_epoch=True,
                                  shuffle_after_epoch_seed=seed, pad_last_batch=True)
    table = fn.readers.numpy(files=files["table"], name="ReaderTable", **common)
    region = {}
    if roi_patch is not None:
        region = dict(roi_start=crop_start(table, roi_patch, oversampling), roi_shape=list(roi_patch),
                      roi_axes=[1, 2, 3], out_of_bounds_policy="pad")
    image = fn.readers.numpy(files=files["image"], name="ReaderImage", **common, **region)
    label = fn.readers.numpy(files=files["label"], name="ReaderLabel", **common, **region)
    return table, image, label


@pipeline_def(enable_conditionals=True)
def _train_pipeline(files, *, patch, slices, oversampling, aug, shard, reader_seed, gpu):
    """3D (``slices == 0``): patches ``(C, *patch)``; 2D: stacks ``(slices, C, *patch)`` per volume."""
    if slices == 0:
        _, image, label = _readers(files, shard=shard, seed=reader_seed, roi_patch=patch,
                                   oversampling=oversampling)
        image, label = fn.reshape(image, layout="CDHW"), fn.reshape(label, layout="CDHW")
    else:
        table, volume, volume_label = _readers(files, shard=shard, seed=reader_seed)
        window = [1, *patch]
        images, labels = [], []
        for _ in range(slices):  # each slice draws its own foreground/uniform position
            start = crop_start(table, window, oversampling)
            images.append(fn.slice(volume, start, window, axes=[1, 2, 3], out_of_bounds_policy="pad"))
            labels.append(fn.slice(volume_label, start, window, axes=[1, 2, 3], out_of_bounds_policy="pad"))
        # (C, slices, Y, X) -> (slices, C, Y, X): every slice is a frame of a 2D sequence
        image = fn.transpose(fn.cat(*images, axis=1), perm=[1, 0, 2, 3], output_layout="FCHW")
        label = fn.transpose(fn.cat(*labels, axis=1), perm=[1, 0, 2, 3], output_layout="FCHW")
    if gpu:
        image, label = image.gpu(), label.gpu()
    return augment(image, label, aug, patch=patch)


def rank_seed(seed: int, rank: int) -> int:
    """DALI (augmentation) seed of one rank: a 31-bit hash of ``(seed, rank)``, so ranks and runs differ."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0] & 0x7FFFFFFF)


class TrainLoader:
    """Training batches from a DALI pipeline as torch tensors.

    ``iter(loader)`` yields ``len(loader)`` batches (one epoch) of
    ``{"image": float32 (B, C, *patch), "label": uint8 (B, 1, *patch)}``, on ``cuda:device_id`` (copied
    by DALI's torch plugin straight from DALI's device buffer) or on the CPU. Each ``iter`` continues the
    same endless DALI stream with the next reshuffled epoch; ``next_batch()`` reads it batch by batch.
    """

    def __init__(self, pipeline, *, batches: int, dim: int, cache_dir: Path):
        self._iterator = DALIGenericIterator([pipeline], ["image", "label"], size=-1)
        self._batches = batches
        self._dim = dim
        # The crop tables are read lazily by the DALI reader: keep them as long as the loader lives.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(cache_dir), True)

    def __len__(self) -> int:
        return self._batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(self._batches):
            yield self.next_batch()

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next batch of the endless stream (ignores epoch boundaries)."""
        out = next(self._iterator)[0]
        image, label = out["image"], out["label"]
        if self._dim == 2:  # (nvol, slices, C, Y, X) -> (nvol * slices, C, Y, X), a view
            image, label = image.flatten(0, 1), label.flatten(0, 1)
        return {"image": image, "label": label}


def _write_tables(data_dir: Path, case_ids: list[str], plans: Plans, cache_dir: Path) -> dict[str, list[str]]:
    """Checks every case and writes its crop table; returns the three readers' absolute file lists."""
    files: dict[str, list[str]] = {"image": [], "label": [], "table": []}
    for case_id in case_ids:
        props = check_case(data_dir, case_id, in_channels=plans.in_channels)
        table_path = cache_dir / f"{case_id}.npy"
        np.save(table_path, crop_table(case_id, props.shape, props.foreground))
        files["image"].append(str(data_dir / f"{case_id}_x.npy"))
        files["label"].append(str(data_dir / f"{case_id}_y.npy"))
        files["table"].append(str(table_path))
    return files


def _check_args(case_ids: Sequence[str], plans: Plans, *, batch_size: int, nvol: int, world_size: int,
                oversampling: float, seed: int) -> tuple[int, list[int]]:
    dim, patch = plans.dim, list(plans.patch_size)
    if dim not in (2, 3) or len(patch) != dim:
        raise ValueError(f"plans: dim {dim} with patch_size {patch}; expected 2 or 3 sizes matching dim")
    if batch_size < 1 or (dim == 2 and (nvol < 1 or batch_size % nvol)):
        raise ValueError(f"--batch-size {batch_size} must be >= 1 and, in 2D, a multiple of --nvol {nvol}")
    if seed < 0:
        raise ValueError(f"--seed {seed} must be >= 0")
    if not 0.0 <= oversampling <= 1.0:
        raise ValueError(f"--oversampling {oversampling} must be in [0, 1]")
    if len(case_ids) < world_size:
        raise ValueError(f"{len(case_ids)} training cases cannot be shared by {world_size} workers; "
                         "use fewer --workers / --gpus")
    return dim, patch


def train_loader(data_dir: Path, case_ids: list[str], plans: Plans, *, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, oversampling: float = 0.33, nvol: int = 1,
                 device_id: int | None = None, num_threads: int = 2,
                 augment: bool | Augmentations = True) -> TrainLoader:
    """Builds the seeded, sharded DALI training loader.

    Args:
        data_dir: preprocessed folder with ``<case>_x.npy``, ``<case>_y.npy``, ``<case>.json``.
        case_ids: all training cases (the same list on every rank; the readers shard it).
        plans: uses ``dim``, ``patch_size`` ((Z, Y, X) or (Y, X)) and ``in_channels``.
        batch_size: patches per batch in 3D, slices per batch in 2D.
        seed: run seed; the file order and shuffles use it on every rank, augmentations use
            ``rank_seed(seed, rank)``. The same arguments give the same batches.
        rank: GLOBAL rank (shard id); world_size: number of ranks.
        oversampling: probability that a patch (3D) or slice (2D) is centred on foreground.
        nvol: 2D only: volumes per batch, each giving ``batch_size // nvol`` slices.
        device_id: CUDA device (the local index) for GPU augmentation; None runs every op on the CPU.
        num_threads: DALI CPU threads.
        augment: True for the reference augmentations, False for plain crops, or an ``Augmentations``.

    Returns:
        TrainLoader; ``len`` = ``ceil(ceil(len(case_ids) / world_size) / batch_size)`` in 3D and
        ``ceil(ceil(len(case_ids) / world_size) / nvol)`` in 2D (one pass over the largest shard; equal on
        all ranks). Batches: image float32 ``(B, C, *patch)``, label uint8 ``(B, 1, *patch)``.

    Raises:
        CaseError: a case's files are missing or disagree. ValueError: inconsistent arguments.
    """
    dim, patch = _check_args(case_ids, plans, batch_size=batch_size, nvol=nvol, world_size=world_size,
                             oversampling=oversampling, seed=seed)
    aug = augment if isinstance(augment, Augmentations) else Augmentations() if augment else Augmentations.none()
    order = [str(c) for c in np.random.default_rng(seed).permutation(sorted(case_ids))]  # epoch 0 shuffled too
    per_batch = batch_size if dim == 3 else nvol
    cache_dir = Path(tempfile.mkdtemp(prefix="nnunet_ray_crops_"))
    try:
        files = _write_tables(Path(data_dir), order, plans, cache_dir)
        pipe = _train_pipeline(files, patch=patch, slices=0 if dim == 3 else batch_size // nvol,
                               oversampling=oversampling, aug=aug, shard=(rank, world_size), reader_seed=seed,
                               gpu=device_id is not None, batch_size=per_batch, num_threads=num_threads,
                               device_id=device_id, seed=rank_seed(seed, rank))
        return TrainLoader(pipe, batches=batches_per_epoch(len(order), world_size, per_batch), dim=dim,
                           cache_dir=cache_dir)
    except BaseException:
        shutil.rmtree(cache_dir, ignore_errors=True)
        raise
