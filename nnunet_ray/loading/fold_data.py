"""One fold's data for one rank: the case ids from splits.json and the loaders built from them.

Shared by the Ray Train worker and the in-process runs (benchmarks, tests), so both train on the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from nnunet_ray.config import ConfigError, TrainConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.folds import read_splits
from nnunet_ray.loading.iterators import eval_loader
from nnunet_ray.loading.pipelines import TrainLoader, train_loader
from nnunet_ray.planning.schema import Plans
from nnunet_ray.preprocessing.case import stale_cases


def fold_cases(data: str | Path, fold: int) -> tuple[list[str], list[str]]:
    """(training case ids, validation case ids) of ``fold`` from ``<data>/splits.json``.

    Raises:
        ConfigError: no splits.json, or the fold does not exist.
    """
    path = Path(data) / "splits.json"
    if not path.is_file():
        raise ConfigError(f"{flag_name('data')}: {path} not found; run `nnunet-ray preprocess` first")
    splits = read_splits(path)
    if not 0 <= fold < len(splits):
        raise ConfigError(f"{flag_name('fold')}: {fold} is not in 0..{len(splits) - 1} ({len(splits)} folds)")
    return list(splits[fold]["train"]), list(splits[fold]["val"])


def check_fold_arrays(data: str | Path, fold: int, plans: Plans, *, case_ids: Sequence[str] | None = None) -> None:
    """Refuse a fold whose arrays were not made with ``plans`` (another preprocessing hash, or never written).

    ``case_ids`` (the fold's cases) replaces reading ``<data>/splits.json`` here, for a ``data`` that is a URI.

    Raises:
        ConfigError: naming ``--data``, the first stale cases and the fix (rerun `nnunet-ray preprocess`).
    """
    if case_ids is None:
        train_ids, val_ids = fold_cases(data, fold)
        case_ids = [*train_ids, *val_ids]
    stale = stale_cases(data, case_ids, plans.preprocessing_hash)
    if stale:
        plans_file = storage.display(storage.join(data, "plans.json"))
        shown = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
        raise ConfigError(f"{flag_name('data')}: {len(stale)} case(s) of fold {fold} ({shown}) were not preprocessed "
                          f"with {plans_file} (preprocessing hash {plans.preprocessing_hash}); "
                          "rerun `nnunet-ray preprocess`")


def fold_loaders(cfg: TrainConfig, plans: Plans, *, device: torch.device, rank: int = 0, world_size: int = 1,
                 start_epoch: int = 0) -> tuple[TrainLoader, Iterable[dict]]:
    """This rank's DALI training loader and validation cases for ``cfg.fold``.

    The training cases are sharded by global rank; the validation cases are split ``[rank::world_size]``
    (``--val-cases`` limits them). A run resumed at ``start_epoch`` reseeds the augmentations with it, so it
    does not replay epoch 0's.
    """
    train_ids, val_ids = fold_cases(cfg.data, cfg.fold)
    loader = train_loader(Path(cfg.data), train_ids, plans, batch_size=cfg.batch_size, seed=cfg.seed + start_epoch,
                          rank=rank, world_size=world_size, oversampling=cfg.oversampling, nvol=cfg.nvol,
                          device_id=device.index if device.type == "cuda" else None, num_threads=cfg.dali_threads)
    val_data = eval_loader(Path(cfg.data), val_ids[: cfg.val_cases or None], rank=rank, world_size=world_size)
    return loader, val_data
