"""One fold trained in this process on its real loaders, without Ray: what benchmarks and tests compare the Ray
engines against (the same loaders, model, validation and checkpoints as a worker of ``distributed/train.py``)."""

from __future__ import annotations

from pathlib import Path

import torch

from nnunet_ray.config import TrainConfig
from nnunet_ray.planning.schema import load_plans
from nnunet_ray.training.loop import Report, fit


def fit_in_process(cfg: TrainConfig, *, report: Report, log_dir: str | Path | None = None) -> dict:
    """``fit`` of ``cfg.fold`` on the CPU with ``cfg.cpus_per_worker`` torch threads and the fold's DALI loaders.

    Returns:
        ``fit``'s result (epochs, best Dice and epoch, stop reason, seconds).
    """
    from nnunet_ray.loading.fold_data import fold_loaders  # DALI: imported only when a fold is trained here

    torch.set_num_threads(cfg.cpus_per_worker)
    plans, device = load_plans(cfg.data), torch.device("cpu")
    loader, val_data = fold_loaders(cfg, plans, device=device)
    return fit(cfg, plans, train_data=loader, val_data=val_data, steps_per_epoch=cfg.train_batches or len(loader),
               device=device, report=report, log_dir=log_dir)
