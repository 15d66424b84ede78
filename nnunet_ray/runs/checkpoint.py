"""The checkpoint format: one self-contained directory, and the local keeper of best / last checkpoints.

A checkpoint directory holds
  model.pt        the U-Net's state dict (unwrapped, no ``module.`` prefix)
  train_state.pt  optimizer, GradScaler and LR-schedule state, and ``progress`` (epoch, best Dice, early-stopping
                  counters, the epoch's metrics)
  config.json     the run's ``TrainConfig`` and the folds it trained on (written and read by ``run_config.py``)
  plans.json      the plans the model was built from (written and read by ``planning/schema.py``)
so ``load_model(dir)`` rebuilds the network with nothing else. Tensors and primitive containers only: both .pt
files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import fnmatch
import math
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnunet_ray.config import TrainConfig
from nnunet_ray.data.records import RecordError
from nnunet_ray.model.unet import build_unet
from nnunet_ray.planning.schema import PLANS_FILE, Plans, load_plans, save_plans
from nnunet_ray.runs.best import BEST_METRIC, is_better
from nnunet_ray.runs.run_config import CONFIG_FILE, CheckpointError, RunConfig, load_run_config, save_run_config

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
REQUIRED = (MODEL_FILE, STATE_FILE, CONFIG_FILE, PLANS_FILE)


def save_checkpoint(directory: str | Path, model: nn.Module, plans: Plans, config: TrainConfig, *,
                    optimizer: torch.optim.Optimizer | None = None, scaler: torch.amp.GradScaler | None = None,
                    schedule: dict | None = None, progress: dict | None = None) -> Path:
    """Write a checkpoint directory (created if needed; existing files are overwritten).

    Args:
        directory: where to write.
        model: the unwrapped network (not the DDP wrapper).
        plans: the plans the model was built from.
        config: the run's options.
        optimizer, scaler: their state is stored when given.
        schedule: ``LRSchedule.state_dict()``.
        progress: primitives only, e.g. {"epoch", "best_dice", "best_epoch", "bad_epochs", "metrics"}.

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    state = {"optimizer": optimizer.state_dict() if optimizer is not None else None,
             "scaler": scaler.state_dict() if scaler is not None else None,
             "schedule": schedule, "progress": progress or {}}
    torch.save(state, directory / STATE_FILE)
    save_run_config(directory, RunConfig(config))
    save_plans(directory, plans)
    return directory


def load_checkpoint(directory: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint directory.

    Returns:
        {"model": state dict, "optimizer", "scaler", "schedule" (each None when not stored), "progress": dict,
        "config": RunConfig, "plans": Plans}.

    Raises:
        CheckpointError: the directory or one of its files is missing or unreadable.
    """
    directory = Path(directory)
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: not a checkpoint (missing {', '.join(missing)})")
    state = load_file(directory / STATE_FILE, map_location=map_location)
    return {"model": load_file(directory / MODEL_FILE, map_location=map_location),
            **state,
            "config": read_config(directory),
            "plans": load_plans(directory)}


def read_config(directory: str | Path) -> RunConfig:
    """A checkpoint's ``config.json``.

    Raises:
        CheckpointError: it is missing or unreadable, naming the file.
    """
    try:
        return load_run_config(directory)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not a checkpoint (missing {CONFIG_FILE})") from None
    except RecordError as err:
        raise CheckpointError(str(err)) from err


def read_progress(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's training progress (epoch, best Dice and epoch, early-stopping counters, the epoch's metrics),
    without its weights or optimizer; ``{}`` when it holds no train_state.pt."""
    path = Path(directory) / STATE_FILE
    return dict(load_file(path).get("progress") or {}) if path.is_file() else {}


def load_file(path: Path, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of one checkpoint file.

    Raises:
        CheckpointError: the file is unreadable (cut short, not a checkpoint), naming it and torch's first sentence.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        reason = str(exc).split(". ")[0].strip().rstrip(".")
        raise CheckpointError(f"{path}: not a readable checkpoint file ({reason})") from exc


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The ``build_unet`` options a run's options select."""
    return {"norm": cfg.norm, "residual": cfg.residual, "deep_supervision": cfg.deep_supervision,
            "deep_supervision_scheme": cfg.deep_supervision_scheme, "negative_slope": cfg.negative_slope}


def load_model(directory: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, Plans, RunConfig]:
    """Rebuild the trained network from a checkpoint directory alone.

    Returns:
        (model in eval mode on ``device``, plans, the run's config.json).

    Raises:
        CheckpointError: the directory is not a complete checkpoint.
    """
    directory = Path(directory)
    missing = [name for name in (MODEL_FILE, CONFIG_FILE, PLANS_FILE) if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: not a checkpoint (missing {', '.join(missing)})")
    config = read_config(directory)
    plans = load_plans(directory)
    model = build_unet(plans, **model_kwargs(config.train))
    model.load_state_dict(load_file(directory / MODEL_FILE))
    return model.to(device).eval(), plans, config


class LocalCheckpoints:
    """Keeps ``<root>/last`` and ``<root>/best`` from the per-epoch checkpoints of a run without Ray.

    A ``report(metrics, checkpoint_dir)`` callback for ``fit``: the checkpoint directory is copied to ``last``
    every epoch, and to ``best`` when ``metrics[metric]`` beats every earlier value (``best.is_better``). Each
    directory is replaced whole, so a crash leaves the previous one intact.
    """

    def __init__(self, root: str | Path, *, metric: str = BEST_METRIC) -> None:
        self.root = Path(root)
        self.metric = metric
        self.best_score = self._stored_best()

    @property
    def last(self) -> Path:
        """Directory of the latest checkpoint."""
        return self.root / "last"

    @property
    def best(self) -> Path:
        """Directory of the checkpoint with the highest ``metric``."""
        return self.root / "best"

    def __call__(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is None:
            return
        _replace_dir(Path(checkpoint_dir), self.last)
        score = metrics.get(self.metric)
        if is_better(score, self.best_score):
            self.best_score = float(score)
            _replace_dir(Path(checkpoint_dir), self.best)

    def _stored_best(self) -> float:
        score = read_progress(self.best).get("metrics", {}).get(self.metric)
        return -math.inf if score is None or math.isnan(score) else float(score)


def _replace_dir(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, swapping directories by rename so ``target`` is never half-written."""
    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.copytree(source, tmp)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def is_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds what ``load_model`` needs (weights, config, plans)."""
    return all((Path(directory) / name).is_file() for name in (MODEL_FILE, CONFIG_FILE, PLANS_FILE))


EPOCH_DIR_GLOB = "epoch_*"  # every epoch checkpoint folder of a run (fnmatch / Path.glob), named by epoch_dir_name


def epoch_dir_name(epoch: int) -> str:
    """The folder name of epoch ``epoch``'s checkpoint inside a run folder (``epoch_0004``), whichever engine ran."""
    return f"epoch_{epoch:04d}"


def is_epoch_dir_name(name: str) -> bool:
    """Whether a folder name is an epoch checkpoint's (``epoch_dir_name``)."""
    return fnmatch.fnmatch(name, EPOCH_DIR_GLOB)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest complete checkpoint folder (``epoch_NNNN`` with config.json and plans.json), or None."""
    folders = sorted(p for p in Path(run_dir).glob(EPOCH_DIR_GLOB)
                     if (p / CONFIG_FILE).is_file() and (p / PLANS_FILE).is_file())
    return folders[-1] if folders else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The best checkpoint of one training run folder, or None when it holds no checkpoint.

    ``<run>/best`` when present (runs kept by ``LocalCheckpoints``); otherwise, in a Ray Train run folder
    (``epoch_NNNN/`` checkpoints, Ray keeping the best and the latest), the checkpoint of the best epoch the
    latest checkpoint recorded (early stopping's best: the first epoch reaching the best validation Dice),
    falling back to the latest when that epoch was never validated or kept.
    """
    run_dir = Path(run_dir)
    if is_checkpoint(run_dir / "best"):
        return run_dir / "best"
    epochs = sorted(d for d in run_dir.glob(EPOCH_DIR_GLOB) if d.is_dir() and is_checkpoint(d))
    if not epochs:
        return None
    latest = epochs[-1]
    best = run_dir / best_checkpoint_name(read_progress(latest).get("best_epoch"), latest.name)
    return best if best in epochs else latest


def best_checkpoint_name(best_epoch: int | None, latest: str) -> str:
    """The folder name of a run's best checkpoint: early stopping's best epoch (``best_epoch``, as the run's progress
    records it), or the ``latest`` checkpoint's folder when no epoch was validated. The training loop writes a
    checkpoint whenever validation improves, so the best epoch's folder exists; Ray keeps it (``runs.best``)."""
    return epoch_dir_name(best_epoch) if best_epoch is not None and best_epoch >= 0 else latest
