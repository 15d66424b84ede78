"""One fold's training process and its summary, shared by both engines that run a fold.

- Ray Train (``train.py``): every DDP worker of a ``TorchTrainer`` runs ``train_process`` and reports with
  ``ray.train.report``.
- Ray Tune (``trial_fit.py``): a single-worker fold runs ``train_process`` inside its Tune trial and reports with
  ``tune.report``.

Either way the run folder holds the same files (``epoch_NNNN/`` checkpoints, ``metrics.jsonl``, ``tensorboard/``,
``summary.json``); the summary names the engine and the device-hours the run held. Each checkpoint's config.json
and the summary record the hash of the splits.json the run trained on (``training.resume``), so a resume or an
ensemble on other folds is refused.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnunet_ray.config import ConfigError, TrainConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.distributed.ray_internals import KILL_DELAY_S
from nnunet_ray.distributed.run_storage import LogMirror
from nnunet_ray.loading.fold_data import fold_loaders
from nnunet_ray.planning.patch import PatchSizeError, with_patch_size
from nnunet_ray.planning.schema import Plans, load_plans
from nnunet_ray.runs.best import BEST_METRIC
from nnunet_ray.runs.checkpoint import best_checkpoint_name, epoch_dir_name, load_checkpoint
from nnunet_ray.runs.run_config import record_splits_hash
from nnunet_ray.runs.summary import RunSummary, save_summary
from nnunet_ray.training.benchmark import benchmark
from nnunet_ray.training.logs import METRICS_FILE
from nnunet_ray.training.loop import fit
from nnunet_ray.training.resume import data_splits_hash

SCORE = "score"  # the metric Tune schedules on: the latest validation mean Dice, finite at every report
Sink = Callable[[dict, Path | None], None]


def fold_plans(cfg: TrainConfig, plans: Plans) -> Plans:
    """The plans the fold trains with: ``plans`` itself, or with ``--patch-size`` its topology re-derived for that
    patch (``with_patch_size``).

    Raises:
        ConfigError: naming ``--patch-size`` and the nearest usable size when the patch cannot be used.
    """
    if not cfg.patch_size:
        return plans
    try:
        return with_patch_size(plans, cfg.patch_size)
    except PatchSizeError as err:
        raise ConfigError(f"{flag_name('patch_size')}: {err}") from err


def loaded_checkpoint(checkpoint: Any) -> dict | None:
    """A Ray ``Checkpoint`` (Train's or Tune's ``get_checkpoint()``) loaded, or None."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_checkpoint(directory)


class FiniteScoreReport:
    """A ``fit`` report callback with ``score`` added: the last finite validation mean Dice (0 before the first).

    Epochs whose validation is skipped (``--val-every``) record NaN Dice; a scheduler (ASHA) comparing trials must
    never see NaN, so ``score`` carries the last validated value forward (after a restart: the checkpoint epoch's
    Dice, else the run's best so far). ``sink`` receives the metrics (the engine's reporter, or a test's).
    """

    def __init__(self, resume: dict | None, sink: Sink) -> None:
        progress = (resume or {}).get("progress") or {}
        candidates = [progress.get("metrics", {}).get(BEST_METRIC), progress.get("best_dice"), 0.0]
        self.score = next(float(v) for v in candidates if v is not None and math.isfinite(v))
        self.sink = sink

    def __call__(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        dice = metrics.get(BEST_METRIC)
        if dice is not None and math.isfinite(dice):
            self.score = float(dice)
        self.sink({**metrics, SCORE: self.score}, checkpoint_dir)


def with_splits_hash(sink: Sink, splits_hash: str | None) -> Sink:
    """``sink`` after recording the run's splits hash in each checkpoint's config.json (before the engine keeps it)."""
    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is not None:
            record_splits_hash(checkpoint_dir, splits_hash)
        sink(metrics, checkpoint_dir)

    return report


def fault_hook(faults: dict | None, rank: int, world_size: int) -> Callable[[int], None] | None:
    """Test-only (tests pass ``{"kill_at_epoch": E, "kill_marker": path}``): kill the last worker for real at the
    start of epoch E, once; the marker file records that it happened, so the restarted run trains on."""
    kill_epoch, marker = (faults or {}).get("kill_at_epoch"), (faults or {}).get("kill_marker")
    if kill_epoch is None or marker is None or rank != world_size - 1:
        return None

    def hook(epoch: int) -> None:
        if epoch == kill_epoch and not Path(marker).exists():
            Path(marker).write_text(f"killed rank {rank} at epoch {epoch}\n")
            time.sleep(KILL_DELAY_S)
            os._exit(1)

    return hook


def train_process(cfg: TrainConfig, run_dir: str, *, device: torch.device, rank: int, world_size: int,
                  resume: dict | None, reporter: Callable[[LogMirror | None], Sink],
                  prepare: Callable[[nn.Module], nn.Module] = lambda m: m, faults: dict | None = None) -> dict:
    """Train (or with ``--benchmark``, time) one fold on this process: its loaders, ``fit``, its log mirror.

    Args:
        cfg: the run's options, ``data`` a local folder (staged already when the run's data is a URI).
        run_dir: the run folder (path or URI); rank 0 writes metrics.jsonl and TensorBoard there.
        resume: the checkpoint to continue from (``loaded_checkpoint``), or None.
        reporter: builds the engine's per-epoch report callback from rank 0's log mirror (None on other ranks).
        prepare: the model wrapper (DDP under Ray Train with several workers).

    Returns:
        ``fit``'s result and the ``splits_hash`` of the folds trained on (``benchmark``'s with ``--benchmark``).
    """
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpus_per_worker)
    plans = fold_plans(cfg, load_plans(cfg.data))  # --patch-size: the topology follows the patch
    start_epoch = resume["progress"]["epoch"] + 1 if resume else 0
    # DALI shards the fold's training cases by global rank (validation cases: [rank::world_size]).
    loader, val_data = fold_loaders(cfg, plans, device=device, rank=rank, world_size=world_size,
                                    start_epoch=start_epoch)
    if cfg.benchmark:
        return benchmark(cfg, plans, train_data=loader, device=device, world_size=world_size, rank=rank,
                         prepare=prepare)
    mirror = LogMirror(run_dir) if rank == 0 else None
    if mirror is not None:
        mirror.pull()
    splits_hash = data_splits_hash(cfg.data)  # the folds fold_loaders just read
    try:
        returned = fit(cfg, plans, train_data=loader, val_data=val_data,
                       steps_per_epoch=cfg.train_batches or len(loader), device=device, rank=rank,
                       world_size=world_size, prepare=prepare,
                       report=FiniteScoreReport(resume, with_splits_hash(reporter(mirror), splits_hash)),
                       resume=resume, log_dir=mirror.local_dir if mirror else None,
                       epoch_hook=fault_hook(faults, rank, world_size))
        return {**returned, "splits_hash": splits_hash}
    finally:
        if mirror is not None:
            mirror.close()


def devices_held(cfg: TrainConfig) -> tuple[str, float]:
    """What a run of ``cfg`` holds while it runs: ("GPU", GPUs) on GPUs (a shared fraction counts as that
    fraction), else ("CPU", CPUs of all its workers)."""
    if cfg.gpus > 0:
        return "GPU", float(cfg.gpus)
    return "CPU", float(cfg.world_size * cfg.cpus_per_worker)


def write_run_summary(cfg: TrainConfig, *, name: str, run_dir: str, returned: dict, engine: str,
                      last_checkpoint: str | None, start: float, node_id: str | None = None) -> dict:
    """Write (and return) ``<run_dir>/summary.json``: how training ended, where its checkpoints are, its cost.

    Args:
        returned: ``fit``'s result on rank 0.
        engine: "tune" (trained inside the Tune trial) or "train" (Ray Train workers).
        last_checkpoint: the run's latest checkpoint folder (None: it kept none); the best one is the folder
            ``runs.checkpoint.best_checkpoint_name`` picks, as predict and evaluate pick it.
        start: ``time.perf_counter()`` when the run began on this driver.
        node_id: the Ray node that trained the run's last attempt, where one process trained it.
    """
    seconds = time.perf_counter() - start
    device, count = devices_held(cfg)
    summary = RunSummary(
        name=name, run_dir=str(run_dir), engine=engine, best_dice=returned.get("best_dice"),
        best_epoch=returned.get("best_epoch"), epochs=returned.get("epochs"), start_epoch=returned.get("start_epoch"),
        stopped_early=returned.get("stopped_early"), stop_reason=returned.get("stop_reason"),
        best_checkpoint=_best_checkpoint(run_dir, returned.get("best_epoch"), last_checkpoint),
        last_checkpoint=last_checkpoint,
        metrics=storage.join(run_dir, METRICS_FILE), tensorboard=storage.join(run_dir, "tensorboard"),
        seconds=seconds, seconds_in_worker=returned.get("seconds"), started_at=time.time() - seconds,
        finished_at=time.time(), device=device, devices=count, device_hours=count * seconds / 3600.0,
        node_id=node_id, splits_hash=returned.get("splits_hash"))
    save_summary(run_dir, summary)
    return summary.to_json()


def _best_checkpoint(run_dir: str, best_epoch: int | None, last_checkpoint: str | None) -> str | None:
    """The run's best checkpoint folder by the rule predict and evaluate use (None: it kept no checkpoint)."""
    if last_checkpoint is None:
        return None
    return storage.join(run_dir, best_checkpoint_name(best_epoch, storage.basename(last_checkpoint)))


def epoch_checkpoint(run_dir: str, epoch: int | None) -> str | None:
    """The location of epoch ``epoch``'s checkpoint in ``run_dir`` (None for no epoch)."""
    return None if epoch is None or epoch < 0 else storage.join(run_dir, epoch_dir_name(epoch))
