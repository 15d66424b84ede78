"""The per-worker training loop: ``fit`` (train, validate, early-stop, checkpoint, report); steps are timed in
``benchmark.py``.

Plain PyTorch, no Ray: the caller injects what differs between a Ray worker and a test,
  ``prepare``  the model wrapper (Ray: ``ray.train.torch.prepare_model``, i.e. DDP; tests: identity),
  ``report``   ``report(metrics, checkpoint_dir)`` once per epoch on every rank; rank 0 passes a temporary
               checkpoint directory to be persisted before the call returns (Ray: ``ray.train.report``;
               without Ray: ``LocalCheckpoints``, which keeps best/ and last/),
  ``resume``   a loaded checkpoint (``load_checkpoint``) to continue from.
Epochs are 0-based. ``metrics.jsonl`` and TensorBoard events go to ``log_dir`` (rank 0 only).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nnunet_ray.model.losses import DeepSupervisionLoss, DiceCELoss
from nnunet_ray.model.unet import build_unet
from nnunet_ray.planning.schema import Plans
from nnunet_ray.runs.best import BEST_METRIC, CHECKPOINT_SCORE, checkpoint_score, is_better
from nnunet_ray.runs.checkpoint import model_kwargs, save_checkpoint
from nnunet_ray.training.logs import RunLog
from nnunet_ray.training.schedules import LRSchedule, set_lr, time_horizon
from nnunet_ray.training.steps import amp_dtype, batch_stream, build_optimizer, make_scaler, train_epoch
from nnunet_ray.training.validate import validate

logger = logging.getLogger(__name__)
Report = Callable[[dict, Path | None], None]


@dataclasses.dataclass
class EarlyStopping:
    """Stop when the validation mean Dice has not improved for ``patience`` validations, after ``min_epochs``.

    ``bad_epochs`` counts validations (with ``--val-every N`` one per N epochs), as its ``update`` calls.
    """

    patience: int
    min_epochs: int
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record one validation score; returns True when it is a new best (``best.is_better``)."""
        if is_better(score, self.best):
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self, epoch: int) -> bool:
        """Whether training ends after ``epoch`` (0-based): at least ``min_epochs`` done and patience used up."""
        return epoch + 1 >= self.min_epochs and self.bad_epochs >= self.patience


@dataclasses.dataclass
class Trainer:
    """Everything one rank trains with (built by ``setup``)."""

    model: nn.Module  # unwrapped: checkpoints and validation use it
    net: nn.Module  # what the training step calls (DDP-wrapped under Ray with several workers)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    loss_fn: nn.Module
    dtype: torch.dtype | None
    device: torch.device


def all_reduce_sum(world_size: int) -> Callable[[torch.Tensor], Any] | None:
    """In-place sum over the process group, or None when there is a single rank."""
    if world_size <= 1 or not dist.is_initialized():
        return None
    return lambda tensor: dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def setup(cfg, plans: Plans, *, device: torch.device, world_size: int = 1,
          prepare: Callable[[nn.Module], nn.Module] = lambda m: m, resume: dict | None = None) -> Trainer:
    """Build model, optimizer, scaler, schedule and loss from the config, restoring ``resume`` when given."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_unet(plans, **model_kwargs(cfg))
    if resume is not None:
        model.load_state_dict(resume["model"])
    if cfg.sync_batchnorm and world_size > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # NCCL only; gloo/CPU has no SyncBatchNorm
    model.to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    dtype = amp_dtype(cfg, device)
    scaler = make_scaler(dtype, device)
    schedule = LRSchedule.from_config(cfg)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        if resume.get("schedule"):
            schedule.load_state_dict(resume["schedule"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: autotuned kernels pay off
    loss_fn: nn.Module = DiceCELoss(focal=cfg.focal)
    loss_fn = DeepSupervisionLoss(loss_fn, model.deep_supervision_weights) if cfg.deep_supervision else loss_fn
    return Trainer(model=model, net=prepare(model), optimizer=optimizer, scaler=scaler, schedule=schedule,
                   loss_fn=loss_fn, dtype=dtype, device=device)


def fit(cfg, plans: Plans, *, train_data: Any, val_data: Iterable[dict], steps_per_epoch: int,
        device: torch.device, rank: int = 0, world_size: int = 1,
        prepare: Callable[[nn.Module], nn.Module] = lambda m: m, report: Report = lambda m, c: None,
        resume: dict | None = None, log_dir: str | Path | None = None,
        epoch_hook: Callable[[int], None] | None = None) -> dict:
    """Train one fold until ``max_epochs`` or early stopping.

    Args:
        cfg: ``TrainConfig``.
        plans: the dataset's plans (the model, patch size and classes).
        train_data: this rank's training loader (``next_batch()`` or re-iterable) of
            {"image": (B, C, *patch), "label": (B, 1, *patch)}.
        val_data: re-iterable over this rank's validation cases {"case_id", "image", "label"}.
        steps_per_epoch: training steps per epoch (equal on all ranks).
        device: this rank's device.
        rank, world_size: global rank and number of ranks.
        prepare: model wrapper (DDP) applied after the model is on ``device``.
        report: called once per epoch on every rank with (metrics, checkpoint dir or None).
        resume: ``load_checkpoint`` output; training continues at its epoch + 1 with its optimizer state.
        log_dir: where rank 0 writes metrics.jsonl and TensorBoard events (None: no logs).
        epoch_hook: called with the epoch index at the start of every epoch (fault-injection tests).

    Returns:
        {"epochs": epochs completed in total, "start_epoch", "best_dice", "best_epoch", "stopped_early",
        "stop_reason": "early_stopping" | "max_time" | "max_epochs", "seconds"}.
    """
    start_time = time.perf_counter()
    tr = setup(cfg, plans, device=device, world_size=world_size, prepare=prepare, resume=resume)
    start_epoch, early = _resumed_progress(cfg, resume)
    # A resumed run that had already stopped early (under these patience / min-epochs settings) stays stopped.
    stopped = start_epoch > 0 and early.should_stop(start_epoch - 1)
    stop_reason = "early_stopping" if stopped else None
    log = RunLog(log_dir, start_epoch=start_epoch, class_names=_class_names(plans)) \
        if rank == 0 and log_dir is not None else None
    stream, all_reduce = batch_stream(train_data), all_reduce_sum(world_size)
    deadline = None if cfg.max_seconds is None else start_time + cfg.max_seconds
    end_epoch = start_epoch if stopped else cfg.max_epochs
    epoch = start_epoch - 1
    epoch_seconds: list[float] = []
    try:
        for epoch in range(start_epoch, end_epoch):
            if epoch_hook is not None:
                epoch_hook(epoch)
            horizon = _horizon(cfg, epoch, deadline, epoch_seconds, all_reduce, world_size, tr.device)
            record, out_of_time = _run_epoch(cfg, plans, tr, epoch, stream=stream, val_data=val_data,
                                             steps=steps_per_epoch, world_size=world_size, all_reduce=all_reduce,
                                             early=early, log=log, deadline=deadline, horizon=horizon)
            epoch_seconds.append(record["epoch_seconds"])
            stopped = early.should_stop(epoch)
            stop_reason = _stop_reason(cfg, epoch, stopped=stopped, out_of_time=out_of_time)
            record.update(stopped_early=stopped, stop_reason=stop_reason)
            _checkpoint_and_report(cfg, plans, tr, record, early, rank=rank, report=report)
            if stop_reason is not None:
                break
        if log is not None and stop_reason is not None:
            log.log_stop(_stop_line(epoch, stop_reason, early))
    finally:
        if log is not None:
            log.close()
    return {"epochs": epoch + 1, "start_epoch": start_epoch, "best_dice": early.best if early.best_epoch >= 0
            else None, "best_epoch": early.best_epoch, "stopped_early": stopped, "stop_reason": stop_reason,
            "seconds": time.perf_counter() - start_time}


STOP_REASONS = {"early_stopping": "no better validation Dice for --patience validations",
                "max_time": "--max-time reached", "max_epochs": "--max-epochs reached"}


def _resumed_progress(cfg, resume: dict | None) -> tuple[int, EarlyStopping]:
    """The first epoch to train and the early-stopping state: from the checkpoint's progress, or a fresh start."""
    progress = (resume or {}).get("progress", {})
    early = EarlyStopping(cfg.patience, cfg.min_epochs, best=progress.get("best_dice", -math.inf),
                          best_epoch=progress.get("best_epoch", -1), bad_epochs=progress.get("bad_epochs", 0))
    return int(progress.get("epoch", -1)) + 1, early


def _stop_line(epoch: int, stop_reason: str, early: EarlyStopping) -> str:
    best = f"best dice {early.best:.4f} @ epoch {early.best_epoch}" if early.best_epoch >= 0 else "no best"
    return f"stopped after epoch {epoch}: {STOP_REASONS[stop_reason]}; {best}"


def _stop_reason(cfg, epoch: int, *, stopped: bool, out_of_time: bool) -> str | None:
    """Why training ends after ``epoch``: "early_stopping", "max_time", "max_epochs", or None to go on."""
    if stopped:
        return "early_stopping"
    if out_of_time:
        return "max_time"
    return "max_epochs" if epoch + 1 >= cfg.max_epochs else None


def _horizon(cfg, epoch: int, deadline: float | None, epoch_seconds: list[float], all_reduce, world_size: int,
             device: torch.device) -> int | None:
    """With ``--max-time``, the run's length in epochs as far as the budget shows now (``time_horizon``); the same on
    every rank (each measures its own epochs: they agree on the mean), so all ranks train at one rate."""
    if deadline is None:
        return None
    horizon = time_horizon(epoch, remaining=deadline - time.perf_counter(), epoch_seconds=epoch_seconds,
                           max_epochs=cfg.max_epochs)
    if all_reduce is None:
        return horizon
    total = torch.tensor(float(horizon), device=device)
    all_reduce(total)
    return round(total.item() / world_size)


def _out_of_time(deadline: float | None, all_reduce, device: torch.device) -> bool:
    """Whether ``--max-time`` has run out on any rank (all ranks must stop at the same epoch)."""
    if deadline is None:
        return False
    flag = torch.tensor(float(time.perf_counter() >= deadline), device=device)
    if all_reduce is not None:
        all_reduce(flag)
    return bool(flag > 0)


def validation_due(cfg, epoch: int, *, last: bool) -> bool:
    """Validate after ``epoch`` (0-based): past ``--skip-first-n-eval``, and every ``--val-every``-th or the last."""
    return epoch >= cfg.skip_first_n_eval and ((epoch + 1) % cfg.val_every == 0 or last)


def _run_epoch(cfg, plans: Plans, tr: Trainer, epoch: int, *, stream, val_data, steps: int, world_size: int,
               all_reduce, early: EarlyStopping, log: RunLog | None, deadline: float | None,
               horizon: int | None = None) -> tuple[dict, bool]:
    """Train one epoch, validate it when due, log it; returns (the epoch's metrics record, out of time)."""
    epoch_start = time.perf_counter()
    lr = tr.schedule.lr(epoch, horizon=horizon)
    set_lr(tr.optimizer, lr)
    record: dict[str, Any] = {"epoch": epoch, "lr": lr}
    record.update(train_epoch(tr.net, stream, steps=steps, world_size=world_size, all_reduce=all_reduce,
                              loss_fn=tr.loss_fn, optimizer=tr.optimizer, scaler=tr.scaler, dtype=tr.dtype,
                              device=tr.device, clip=cfg.gradient_clip_val))
    out_of_time = _out_of_time(deadline, all_reduce, tr.device)
    overlay = None
    if validation_due(cfg, epoch, last=out_of_time or epoch + 1 >= cfg.max_epochs):
        want = log is not None and cfg.image_every > 0 and epoch % cfg.image_every == 0
        val = validate(tr.model, val_data, plans=plans, loss_fn=tr.loss_fn, device=tr.device, dtype=tr.dtype,
                       window=cfg.window(), all_reduce=all_reduce, want_overlay=want, scores_on=cfg.val_scores_on)
        overlay = val.pop("overlay")
        record.update(val)
        tr.schedule.observe(val["val_loss"])
        early.update(epoch, val[BEST_METRIC])
    else:
        record.update({"dice_mean": math.nan, "dice": None, "val_loss": math.nan})
    record.update({"best_dice": early.best if early.best_epoch >= 0 else math.nan, "best_epoch": early.best_epoch,
                   "epoch_seconds": time.perf_counter() - epoch_start})
    if log is not None:
        log.log_epoch(record)
        if overlay is not None:
            log.log_overlay(epoch, *overlay)
    return record, out_of_time


def _checkpoint_and_report(cfg, plans: Plans, tr: Trainer, record: dict, early: EarlyStopping, *, rank: int,
                           report: Report) -> None:
    """Rank 0 writes the epoch's checkpoint (when due) to a temporary directory; every rank reports (a barrier)."""
    record[CHECKPOINT_SCORE] = checkpoint_score(early.best, early.best_epoch, record["epoch"])
    new_best = early.best_epoch == record["epoch"]
    # --checkpoint-every N skips epochs, never a new best (Ray's best checkpoint) nor the last epoch.
    due = (record["epoch"] + 1) % cfg.checkpoint_every == 0 or new_best or record["stop_reason"] is not None
    if rank != 0 or not due:
        report(record, None)
        return
    progress = {"epoch": record["epoch"], "best_dice": early.best, "best_epoch": early.best_epoch,
                "bad_epochs": early.bad_epochs, "stopped_early": record["stopped_early"],
                "metrics": {k: v for k, v in record.items() if isinstance(v, (int, float, list, type(None)))}}
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_ckpt_") as tmp:
        save_checkpoint(tmp, tr.model, plans, cfg, optimizer=tr.optimizer, scaler=tr.scaler,
                        schedule=tr.schedule.state_dict(), progress=progress)
        report(record, Path(tmp))


def _class_names(plans: Plans) -> list[str]:
    return [plans.labels.get(str(c), str(c)) for c in range(1, plans.n_classes)]
