"""A tiny preprocessed synthetic task (real synth -> plan -> preprocess, no Ray), shared by training tests.

``build_tiny_task`` is also imported by tests/distributed/conftest.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from nnunet_ray.config import SynthConfig
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import kfold_splits, save_splits
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.planning.fingerprint import case_fingerprint, merge_fingerprints
from nnunet_ray.planning.patch import with_patch_size
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import save_plans
from nnunet_ray.preprocessing.case import preprocess_case

torch.set_num_threads(1)


def build_tiny_task(root: Path, *, dim: int = 3, cases: int = 6, size: int = 24, folds: int = 3,
                    patch: list[int] | None = None, filters: list[int] | None = None, seed: int = 0) -> Path:
    """Write a synthetic task and preprocess it with plans shrunk for CPU tests.

    Args:
        root: empty folder to work in.
        dim: 2 or 3.
        cases: training cases.
        size: approximate volume edge in voxels.
        folds: number of folds in splits.json.
        patch: patch size override ((Z, Y, X) or (Y, X)); topology is recomputed for it.
        filters: channels per level (default 4, 8, 16, ...) to keep the network tiny.

    Returns:
        The preprocessed folder (plans.json, splits.json, <case>_x.npy, <case>_y.npy, <case>.json).
    """
    raw = make_synthetic_task(SynthConfig(out=str(root / "Task97_Tiny"), cases=cases, test=0, size=size, seed=seed))
    dataset = load_dataset(raw)
    fingerprint = merge_fingerprints(dataset, [case_fingerprint(c) for c in dataset.training])
    plans = make_plans(dataset, fingerprint, dim=dim)
    plans = with_patch_size(plans, patch or ([16, 16, 16] if dim == 3 else [32, 32]))
    n_levels = len(plans.strides)
    plans = dataclasses.replace(plans, filters=(filters or [4 * 2**i for i in range(n_levels)])[:n_levels])
    out = root / "preprocessed" / dataset.name / f"{dim}d"
    save_plans(out, plans)
    for case in dataset.training:
        result = preprocess_case(case, plans, out)
        assert result["status"] == "done", result
    save_splits(out, kfold_splits([c.case_id for c in dataset.training], n_splits=folds))
    return out


@pytest.fixture(scope="session")
def tiny_task_3d(tmp_path_factory) -> Path:
    """6 cases of ~24^3 voxels, 16^3 patches, 3 folds."""
    return build_tiny_task(tmp_path_factory.mktemp("tiny3d"), dim=3)


@pytest.fixture(scope="session")
def tiny_task_2d(tmp_path_factory) -> Path:
    """6 cases, 32x32 slice patches, 3 folds."""
    return build_tiny_task(tmp_path_factory.mktemp("tiny2d"), dim=2)
