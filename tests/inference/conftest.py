"""Tiny trained-shape ensembles for the prediction tests: real plans from a synthetic task, real checkpoints.

The networks are randomly initialised (prediction code does not care whether weights are trained); they are
kept tiny so a whole-volume sliding window takes well under a second on one CPU thread.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from nnunet_ray.config import TrainConfig
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.model.unet import build_unet
from nnunet_ray.planning.fingerprint import case_fingerprint, merge_fingerprints
from nnunet_ray.planning.patch import with_patch_size
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import Plans
from nnunet_ray.runs.checkpoint import save_checkpoint

torch.set_num_threads(1)


def tiny_plans(raw: Path, dim: int, *, patch: list[int] | None = None) -> Plans:
    """The dataset's real plans with a small patch and 4, 8, 16... filters."""
    dataset = load_dataset(raw)
    plans = make_plans(dataset, merge_fingerprints(dataset, [case_fingerprint(c) for c in dataset.training]), dim=dim)
    plans = with_patch_size(plans, patch or ([8, 16, 16] if dim == 3 else [16, 16]))
    return dataclasses.replace(plans, filters=tuple(4 * 2**i for i in range(len(plans.strides))))


def save_random_checkpoint(directory: Path, plans: Plans, *, seed: int = 0, fold: int = 0, progress=None,
                           data: str = "x") -> Path:
    """A checkpoint directory holding a randomly initialised network for ``plans`` (``data``: the run's
    preprocessed folder, where its splits.json is)."""
    torch.manual_seed(seed)
    config = TrainConfig(data=data, results="y", dim=plans.dim, fold=fold)
    return save_checkpoint(directory, build_unet(plans), plans, config, progress=progress)


@pytest.fixture(scope="session")
def plans_3d(synth_task) -> Plans:
    """3D plans of the synthetic task, patch 8x16x16."""
    return tiny_plans(synth_task, 3)


@pytest.fixture(scope="session")
def plans_2d(synth_task) -> Plans:
    """2D plans of the synthetic task, patch 16x16."""
    return tiny_plans(synth_task, 2)


@pytest.fixture(scope="session")
def checkpoint_3d(tmp_path_factory, plans_3d) -> Path:
    """A 3D checkpoint directory (read-only)."""
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt3d") / "best", plans_3d, seed=1)


@pytest.fixture(scope="session")
def checkpoint_2d(tmp_path_factory, plans_2d) -> Path:
    """A 2D checkpoint directory (read-only)."""
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt2d") / "best", plans_2d, seed=2)
