"""One fold's data for one rank: the loaders built from the fold's cases (``data.folds``).

Shared by the Ray Train worker and the in-process runs (benchmarks, tests), so both train on the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from nnunet_ray.config import ConfigError, TrainConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.folds import fold_case_ids
from nnunet_ray.loading.iterators import eval_loader
from nnunet_ray.loading.pipelines import TrainLoader, train_loader
from nnunet_ray.planning.schema import PLANS_FILE, Plans
from nnunet_ray.preprocessing.record import stale_cases


def check_fold_arrays(data: str | Path, fold: int, plans: Plans, *, case_ids: Sequence[str] | None = None) -> None:
    """Refuse a fold whose arrays were not made with ``plans`` (another preprocessing hash, or never written).

    ``case_ids`` (the fold's cases) replaces reading the folds here.

    Raises:
        ConfigError: naming ``--data``, the first stale cases and the fix (rerun `nnunet-ray preprocess`).
    """
    if case_ids is None:
        train_ids, val_ids = fold_case_ids(data, fold)
        case_ids = [*train_ids, *val_ids]
    stale = stale_cases(data, case_ids, plans.preprocessing_hash)
    if stale:
        plans_file = storage.display(storage.join(data, PLANS_FILE))
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
    train_ids, val_ids = fold_case_ids(cfg.data, cfg.fold)
    loader = train_loader(Path(cfg.data), train_ids, plans, batch_size=cfg.batch_size, seed=cfg.seed + start_epoch,
                          rank=rank, world_size=world_size, oversampling=cfg.oversampling, nvol=cfg.nvol,
                          device_id=_cuda_index(device), num_threads=cfg.dali_threads)
    val_data = eval_loader(Path(cfg.data), val_ids[: cfg.val_cases or None], rank=rank, world_size=world_size)
    return loader, val_data


def _cuda_index(device: torch.device) -> int | None:
    """The GPU a DALI pipeline runs on (``device``'s, or the current one for a bare ``cuda``); None on the CPU."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()
