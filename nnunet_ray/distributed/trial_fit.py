"""A single-worker fold trained inside its Ray Tune trial: ``fit_in_trial``.

Ray's guide to Tune with Train says a trial that runs one process does its work directly in the trial
(https://docs.ray.io/en/latest/train/user-guides/hyperparameter-optimization.html): no ``TorchTrainer``, so no
controller, worker group, queue or placement-group cleaner per trial. The trial's resources are declared with
``tune.with_resources`` (a GPU, a fraction of one, or CPUs), so Tune schedules trials by what they really hold,
frees them the moment a trial ends or ASHA stops it, and a pending trial is demand an autoscaler sees.

Each epoch: ``tune.report(metrics, checkpoint=...)`` (Tune persists the checkpoint as ``epoch_NNNN`` in the trial
folder and keeps the best and the latest, ``tune.CheckpointConfig``); a trial restarted after its process or node
died (``tune.FailureConfig``) or restored with ``--resume`` continues from ``tune.get_checkpoint()``. The trial
folder is the run folder, with the same files a Ray Train run writes (``fold_run``).
"""

from __future__ import annotations

import time
from pathlib import Path

import ray
import torch
from ray import tune

from nnunet_ray.config import TrainConfig
from nnunet_ray.distributed.fold_run import epoch_checkpoint, loaded_checkpoint, train_process, write_run_summary
from nnunet_ray.distributed.ray_internals import name_trial_checkpoints_by_epoch
from nnunet_ray.distributed.run_storage import LogMirror, stage_key, staged_config
from nnunet_ray.planning.schema import load_plans


class TrialReporter:
    """``fit``'s report callback inside a Tune trial: upload the logs, then ``tune.report`` with the checkpoint
    (persisted before it returns, so ``fit`` may delete its temporary folder right after); remembers the last
    epoch that has a checkpoint."""

    def __init__(self, mirror: LogMirror | None) -> None:
        self.mirror = mirror
        self.last_epoch: int | None = None

    def __call__(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        if self.mirror is not None:
            self.mirror.push()
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        tune.report(metrics, checkpoint=checkpoint)
        if checkpoint is not None:
            self.last_epoch = int(metrics["epoch"])


def trial_device(cfg: TrainConfig) -> torch.device:
    """The trial's device: the GPU (or GPU share) Tune assigned it (``CUDA_VISIBLE_DEVICES``: the one visible, so
    index 0), else the CPU. Indexed: the loader runs its DALI augmentation on ``device.index`` (an unindexed
    ``cuda`` would leave the pipeline on the CPU threads), as a Ray Train worker's ``get_device()`` is."""
    if cfg.gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def fit_in_trial(cfg: TrainConfig, name: str, run_dir: str, *, faults: dict | None = None) -> dict:
    """Train one fold in this Tune trial and write its ``summary.json`` (``engine: "tune"``).

    Args:
        cfg: the trial's options (one worker; ``data`` a path or URI, staged once per node).
        name, run_dir: the trial's name and folder (path or URI), which is the run folder.
        faults: test-only fault injection (``fold_run.fault_hook``).

    Returns:
        the summary ``fold_run.write_run_summary`` writes.
    """
    start = time.perf_counter()
    resume = loaded_checkpoint(tune.get_checkpoint())
    name_trial_checkpoints_by_epoch()
    cfg = staged_config(cfg, stage_key(load_plans(cfg.data), cfg.dim))  # --data on a URI: this node's copy
    reporter = TrialReporter(None)

    def make_reporter(mirror: LogMirror | None) -> TrialReporter:
        reporter.mirror = mirror
        return reporter

    returned = train_process(cfg, run_dir, device=trial_device(cfg), rank=0, world_size=1,
                             resume=resume, reporter=make_reporter, faults=faults)
    # A restored trial that trains no further epoch (it had stopped) keeps the checkpoint it resumed from.
    last = reporter.last_epoch if reporter.last_epoch is not None or resume is None else resume["progress"]["epoch"]
    return write_run_summary(cfg, name=name, run_dir=run_dir, returned=returned, engine="tune", start=start,
                             last_checkpoint=epoch_checkpoint(run_dir, last),
                             node_id=ray.get_runtime_context().get_node_id())

