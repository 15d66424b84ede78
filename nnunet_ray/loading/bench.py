"""Loader throughput: patches per second of the training pipeline with every augmentation on.

Used by ``scripts/benchmark.py``; by hand::

    .venv/bin/python -c "from nnunet_ray.loading.bench import loader_throughput as t; print(t(batches=3))"
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_ray.loading.augment import Augmentations
from nnunet_ray.loading.pipelines import train_loader
from nnunet_ray.planning.patch import synthetic_plans
from nnunet_ray.preprocessing.record import CaseProperties, write_case_record


def write_synthetic_cases(folder: Path, *, n_cases: int, channels: int, shape: Sequence[int],
                          seed: int = 0) -> list[str]:
    """Writes preprocessed-format cases (random image, one small labelled cube) into ``folder``.

    Args:
        folder: existing folder.
        n_cases: number of cases.
        channels: image channels C.
        shape: spatial shape ``(Z, Y, X)`` of every case.
        seed: random seed of the image values and cube positions.

    Returns:
        The case ids, ``bench_000``, ``bench_001``, ...
    """
    rng = np.random.default_rng(seed)
    case_ids = []
    for i in range(n_cases):
        case_id = f"bench_{i:03d}"
        image = rng.standard_normal((channels, *shape), dtype=np.float32)
        label = np.zeros((1, *shape), np.uint8)
        corner = [int(rng.integers(0, max(s - 8, 1))) for s in shape]
        box: tuple[int | slice, ...] = (0, *[slice(c, c + 8) for c in corner])
        label[box] = 1
        np.save(folder / f"{case_id}_x.npy", image)
        np.save(folder / f"{case_id}_y.npy", label)
        write_case_record(folder, CaseProperties.unprocessed(
            case_id, shape, foreground={"1": np.argwhere(label[0] == 1)[::4].tolist()}))
        case_ids.append(case_id)
    return case_ids


def loader_throughput(*, dim: int = 3, channels: int = 4, patch_size: Sequence[int] = (128, 128, 128),
                      batch_size: int = 2, nvol: int = 1, n_cases: int = 2, batches: int = 5, warmup: int = 1,
                      margin: int = 16, depth: int = 32, device_id: int | None = None, num_threads: int = 2,
                      seed: int = 0, worst_case: bool = False, data_dir: Path | None = None) -> dict:
    """Times the training loader with the full augmentation chain on.

    ``worst_case=False`` uses the reference probabilities (what training sees); ``worst_case=True`` forces
    every augmentation on every sample (probability 1).

    Synthetic cases of shape ``patch + margin`` per axis (2D: ``depth`` slices of ``patch + margin``) are
    written to ``data_dir`` (a temporary folder by default); then ``batches`` batches are timed after
    ``warmup`` untimed ones. On a GPU (``device_id``) the clock stops after ``torch.cuda.synchronize``.

    Args:
        dim: 3 (patches) or 2 (slices); patch_size: (Z, Y, X) or (Y, X).
        channels: image channels; batch_size: patches (3D) or slices (2D) per batch; nvol: 2D volumes per batch.
        n_cases, margin, depth: synthetic data size. device_id: None for CPU. num_threads: DALI threads.
        seed: data and loader seed. data_dir: keep the synthetic cases there instead of a temporary folder.

    Returns:
        ``{"patches_per_s", "batches_per_s", "seconds", "batches", "batch_size", "dim", "patch_size",
        "channels", "worst_case", "device"}``; in 2D a "patch" is one slice.
    """
    import torch

    patch = [int(s) for s in patch_size]
    shape = [s + margin for s in patch] if dim == 3 else [depth] + [s + margin for s in patch]
    plans = synthetic_plans(dim, patch, in_channels=channels)
    aug = Augmentations()
    if worst_case:
        aug = Augmentations(zoom=1.0, flip=1.0, noise=1.0, blur=1.0, brightness=1.0, contrast=1.0)
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_bench_") as tmp:
        folder = Path(data_dir) if data_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        case_ids = write_synthetic_cases(folder, n_cases=n_cases, channels=channels, shape=shape, seed=seed)
        loader = train_loader(folder, case_ids, plans, batch_size=batch_size, seed=seed, nvol=nvol,
                              device_id=device_id, num_threads=num_threads, augment=aug)
        for _ in range(warmup):
            loader.next_batch()
        start = time.perf_counter()
        for _ in range(batches):
            batch = loader.next_batch()
        if device_id is not None:
            torch.cuda.synchronize(batch["image"].device)
        seconds = time.perf_counter() - start
        del loader
    return {"patches_per_s": batches * batch_size / seconds, "batches_per_s": batches / seconds,
            "seconds": seconds, "batches": batches, "batch_size": batch_size, "dim": dim,
            "patch_size": patch, "channels": channels, "worst_case": worst_case,
            "device": "cpu" if device_id is None else f"cuda:{device_id}"}
