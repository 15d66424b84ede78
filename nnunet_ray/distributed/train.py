"""Ray Train (V2) layer for one fold: ``train_fold(cfg)`` and ``benchmark_train(cfg)``.

    nnunet-ray train --data PRE/Task04_Hippocampus/3d --results RESULTS --fold 0 --workers 2

The worker function is the plain PyTorch loop of ``nnunet_ray.training.loop`` with three Ray touch points:
[1] the DALI loader shards the fold's training cases by global world rank, [2] ``prepare_model`` wraps the model
in DDP (gloo on CPU, NCCL on GPU) when there is more than one worker, [3] ``ray.train.report`` once per epoch,
rank 0 attaching that epoch's checkpoint. Ray keeps the best checkpoint by validation mean Dice plus the
latest; after a worker failure the group restarts (``--max-failures``) from ``ray.train.get_checkpoint()``.

The run lives in ``<results>/<name>/`` (Ray's storage_path / run name): ``epoch_NNNN/`` checkpoints,
``metrics.jsonl``, ``tensorboard/``, ``summary.json``; ``--results`` and ``--data`` may be cloud URIs
(``run_storage``: checkpoints through Ray's storage, logs mirrored by rank 0, data staged once per node), and a
probe checks every node can reach both before the workers start. Ray resumes any run whose name already has a
snapshot, so a finished run is only continued with ``--resume-training``; otherwise ``train_fold`` refuses with a
message.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from nnunet_ray.config import ConfigError, RunError, TrainConfig, flag_name, from_dict, with_options
from nnunet_ray.data import storage
from nnunet_ray.data.folds import fold_case_ids
from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.fold_run import fold_plans, loaded_checkpoint, train_process, write_run_summary
from nnunet_ray.distributed.probe import probe_storage
from nnunet_ray.distributed.ray_internals import quiet_report_logs, run_exists
from nnunet_ray.distributed.run_storage import (
    epoch_reporter,
    location_of,
    resume_view,
    stage_key,
    staged_config,
    storage_location,
)
from nnunet_ray.loading.fold_data import check_fold_arrays
from nnunet_ray.planning.schema import PLANS_FILE, Plans, PlansError, load_plans
from nnunet_ray.runs.best import CHECKPOINT_SCORE, SCORE_ORDER
from nnunet_ray.runs.names import bench_run_name, train_run_name
from nnunet_ray.training.benchmark import save_perf
from nnunet_ray.training.resume import check_resume

logger = logging.getLogger(__name__)


def run_name(cfg: TrainConfig, plans: Plans) -> str:
    """The run's stable name: ``--experiment``, else ``<dataset>_<dim>d_fold<F>`` (never a timestamp)."""
    return cfg.experiment or train_run_name(plans.dataset, cfg.dim, cfg.fold)


# ----------------------------------------------------------------------------------------------- worker side

def train_worker(config: dict) -> dict:
    """Ray Train worker function: train (or benchmark) one fold on this rank; rank 0's return is the result.

    Args:
        config: {"cfg": asdict(TrainConfig), "run_dir": path or URI, "stage_key": str, optional
            "kill_at_epoch": int, "kill_marker": str}.
    """
    cfg = staged_config(from_dict(TrainConfig, config["cfg"]), config["stage_key"])  # --data on a URI: local copy
    quiet_report_logs()
    ctx = ray.train.get_context()
    # [1] DALI shards by global rank; [2] prepare_model: DDP (gloo on CPU, NCCL on GPU) when world_size > 1;
    # [3] ray.train.report once per epoch with rank 0's checkpoint (epoch_reporter), with the finite score.
    return train_process(cfg, config["run_dir"], device=ray.train.torch.get_device(), rank=ctx.get_world_rank(),
                         world_size=ctx.get_world_size(), resume=loaded_checkpoint(ray.train.get_checkpoint()),
                         reporter=lambda mirror: epoch_reporter(mirror, cfg.checkpoint_upload),
                         prepare=ray.train.torch.prepare_model, faults=config)


# ----------------------------------------------------------------------------------------------- driver side

def build_trainer(cfg: TrainConfig, *, name: str, callbacks: Sequence[Any] = (), driver_cpus: float = 0.0,
                  plans: Plans | None = None, worker_faults: dict | None = None) -> TorchTrainer:
    """The ``TorchTrainer`` for one fold (Tune drivers pass ``callbacks=[TuneReportCallback()]``; fault-injection
    tests pass ``worker_faults={"kill_at_epoch": E, "kill_marker": path}``).

    ``driver_cpus``: CPUs a Tune driver holds for this run; the workers ask for that much less in total, so a
    trial's footprint stays ``workers x cpus_per_worker`` and concurrency can be computed from it.
    """
    storage_path, storage_filesystem = storage_location(cfg.results)
    plans = plans if plans is not None else load_plans(cfg.data)
    loop_config: dict[str, Any] = {"cfg": dataclasses.asdict(cfg), "run_dir": storage.join(cfg.results, name),
                                   "stage_key": stage_key(plans, cfg.dim), **(worker_faults or {})}
    resources = {"CPU": cfg.cpus_per_worker - driver_cpus / cfg.world_size,
                 **({"GPU": cfg.gpus_per_worker} if cfg.gpus > 0 else {})}
    # The type: ignores below: mypy sees ray.train's V1 classes, which ray/train/__init__.py replaces at runtime
    # with the V2 API (Ray's default): logging_config, max_preemption_failures, a loop's return value.
    return TorchTrainer(
        train_worker,  # type: ignore[arg-type]
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.gpus > 0 else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.world_size, use_gpu=cfg.gpus > 0,
                                     resources_per_worker=resources, placement_strategy=_placement(cfg)),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=storage_filesystem, callbacks=list(callbacks),
            # Rank 0 prints one line per epoch itself; Ray's per-report INFO lines would repeat it per worker.
            logging_config=LoggingConfig(log_level="WARNING"),  # type: ignore[call-arg]
            failure_config=FailureConfig(max_failures=cfg.max_failures,  # type: ignore[call-arg]
                                         max_preemption_failures=cfg.max_preemption_failures),
            # Ray always keeps the latest checkpoint too, so this keeps best-by-Dice + last.
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=CHECKPOINT_SCORE,
                                               checkpoint_score_order=SCORE_ORDER)),
    )


def _placement(cfg: TrainConfig) -> str:
    """Ray's placement strategy for the run's workers: GPU workers of one run on one node unless ``--placement
    spread``; CPU workers as Ray packs them by default (they may fill several small nodes)."""
    if cfg.placement == "spread":
        return "SPREAD"
    return "STRICT_PACK" if cfg.gpus > 1 else "PACK"


def prepare_fold(cfg: TrainConfig) -> tuple[TrainConfig, str, str]:
    """Validate the options against the data; returns (the config with absolute paths, run name, run dir).

    Paths are made absolute here because Ray workers do not share the driver's working directory; ``--data`` and
    ``--results`` may also be URIs (the run dir is then a URI too).

    Raises:
        ConfigError: naming the flag to fix (data, dim, fold, workers, patch size).
    """
    cfg.validate()
    cfg = dataclasses.replace(cfg, data=storage.absolute(cfg.data), results=storage.absolute(cfg.results))
    try:
        plans = load_plans(cfg.data)
    except PlansError as err:
        raise ConfigError(f"{flag_name('data')}: {err}") from err
    if plans.dim != cfg.dim:
        raise ConfigError(f"{flag_name('dim')}: {cfg.dim} but {storage.display(cfg.data)} holds {plans.dim}d plans")
    fold_plans(cfg, plans)
    train_ids, val_ids = fold_case_ids(cfg.data, cfg.fold)
    check_fold_arrays(cfg.data, cfg.fold, plans, case_ids=[*train_ids, *val_ids])
    if len(train_ids) < cfg.world_size:
        raise ConfigError(f"{flag_name('workers')}: {cfg.world_size} workers but fold {cfg.fold} has only "
                          f"{len(train_ids)} training cases")
    name = run_name(cfg, plans)
    return cfg, name, storage.join(cfg.results, name)


def _probe(cfg: TrainConfig) -> None:
    """Every node must read ``--data`` and write ``--results`` before any worker starts (after ``init_ray``)."""
    probe_storage(readable={"data": storage.join(cfg.data, PLANS_FILE)}, results=cfg.results)


def _fit(trainer: TorchTrainer, cfg: TrainConfig, run_dir: str) -> ray.train.Result:
    """``trainer.fit()``, turning a run that failed for good into one line: the cause and where its logs are."""
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        cause = lines[-1] if lines else type(err).__name__
        raise RunError(f"training failed (after up to {cfg.max_failures} restarts): {cause}; "
                       f"run folder {storage.display(run_dir)}") from err


def train_fold(cfg: TrainConfig, *, worker_faults: dict | None = None) -> dict:
    """Train one fold on Ray Train workers and summarise the run (with ``--benchmark``: ``benchmark_train``).

    Args:
        cfg: the training options (``--data`` a preprocessed folder with plans.json and splits.json).
        worker_faults: test-only fault injection, see ``_fault_hook``.

    Returns:
        {"name", "run_dir", "best_dice", "best_epoch", "epochs" (completed in total), "stopped_early",
        "stop_reason" (early_stopping / max_time / max_epochs),
        "best_checkpoint", "last_checkpoint" (directories), "metrics" (metrics.jsonl), "tensorboard",
        "seconds"}; also written to ``<run_dir>/summary.json``.

    Raises:
        ConfigError: a bad option, a run of that name exists and ``--resume-training`` is not set, or it is set
            with an option or plans that cannot change on resume (``training.resume``).
        ray.train.TrainingFailedError: the workers failed more than ``--max-failures`` times.
    """
    cfg = with_options(cfg)  # a config built in Python with a --recipe gets its values (the CLI's already has them)
    if cfg.benchmark:
        return benchmark_train(cfg)
    start = time.perf_counter()
    cfg, name, run_dir = prepare_fold(cfg)
    storage.check_writable_here(cfg.results, "results")
    exists = run_exists(run_dir)
    if exists and not cfg.resume_training:
        raise ConfigError(f"{flag_name('experiment')}: a run named {name!r} already exists in "
                          f"{storage.display(cfg.results)}; "
                          f"pass {flag_name('resume_training')} to continue it or {flag_name('experiment')} NEW "
                          "to start another")
    if cfg.resume_training and not exists:
        logger.info("no earlier run named %r; starting from epoch 0", name)
    if cfg.resume_training and exists:
        with resume_view(run_dir) as local_run:  # on the driver: workers would fail on the state dict
            check_resume(cfg, fold_plans(cfg, load_plans(cfg.data)), local_run)
    init_ray(cfg.address)
    _probe(cfg)
    return fit_fold(cfg, name, run_dir, start=start, worker_faults=worker_faults)


def fit_fold(cfg: TrainConfig, name: str, run_dir: str | Path, *, callbacks: Sequence[Any] = (),
             driver_cpus: float = 0.0, start: float | None = None, worker_faults: dict | None = None) -> dict:
    """Fit a prepared run (``prepare_fold``'s output) on Ray Train and write its ``summary.json``.

    Returns:
        the summary ``train_fold`` documents, plus "seconds_in_worker" (rank 0's ``fit`` time) and "started_at" /
        "finished_at" (Unix time).
    """
    start = time.perf_counter() if start is None else start
    run_dir = str(run_dir)
    trainer = build_trainer(cfg, name=name, callbacks=callbacks, driver_cpus=driver_cpus, worker_faults=worker_faults)
    result = _fit(trainer, cfg, run_dir)
    return write_run_summary(
        cfg, name=name, run_dir=run_dir, returned=result.return_value or {},  # type: ignore[attr-defined]  # V2
        engine="train", start=start,
        last_checkpoint=location_of(cfg.results, result.checkpoint.path) if result.checkpoint else None)


def benchmark_train(cfg: TrainConfig) -> dict:
    """Benchmark mode on Ray Train workers: untimed ``--warmup`` steps, then ``--train-batches`` timed steps.

    Runs under ``<results>/<name>_bench_<workers>w`` (no checkpoints; perf.json is written there and printed).

    Returns:
        rank 0's perf dict: throughput_train (images/s, global batch / mean step time), latency_train_mean,
        _90, _95, _99 (ms), world_size, batch_size, ...; also written to ``<run_dir>/perf.json``.
    """
    cfg = dataclasses.replace(cfg, benchmark=True)
    cfg, name, _ = prepare_fold(cfg)
    # Benchmarks report no checkpoint, so Ray keeps no snapshot and a rerun under the same name starts afresh.
    name = bench_run_name(name, cfg.world_size)
    init_ray(cfg.address)
    _probe(cfg)
    run_dir = storage.join(cfg.results, name)
    perf = _fit(build_trainer(cfg, name=name), cfg, run_dir).return_value  # type: ignore[attr-defined]  # V2
    logger.info("benchmark %s: %s", name, storage.display(save_perf(run_dir, perf)))
    return perf
