"""Training one fold on real Ray Train workers: 2-worker DDP on CPU, resume, a killed worker, learnability.

Each ``train_fold`` costs ~15-30 s of Ray start-up and tear-down on 2 cores, so the runs are few and tiny.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnunet_ray.config import ConfigError, TrainConfig
from nnunet_ray.data.folds import load_splits, save_splits, splits_hash
from nnunet_ray.distributed.ray_internals import run_exists
from nnunet_ray.distributed.train import run_name, train_fold
from nnunet_ray.planning.schema import load_plans, save_plans
from nnunet_ray.runs.checkpoint import load_checkpoint, load_model
from nnunet_ray.training.logs import read_metrics
from tests.conftest import make_test_plans
from tests.training.conftest import build_tiny_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """6 cases, 16^3 patches, 3 folds: fold 0 trains on 4 cases (2 per worker) and validates on 2."""
    return build_tiny_task(tmp_path_factory.mktemp("task"), dim=3)


def _cfg(task, results, **overrides):
    base = dict(data=str(task), results=str(results), dim=3, fold=0, workers=2, max_epochs=2, min_epochs=1,
                warmup=0, batch_size=2, dali_threads=1, image_every=1, max_failures=2)
    return TrainConfig(**{**base, **overrides})


def _epochs(run_dir):
    return [r["epoch"] for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.mark.parametrize("overrides, flag", [
    ({"dim": 2}, "--dim"),
    ({"fold": 3}, "--fold"),
    ({"workers": 5}, "--workers"),
    ({"learning_rate": 0.0}, "--learning-rate"),
    ({"seed": -1}, "--seed"),
    ({"sync_batchnorm": True}, "--sync-batchnorm"),
    ({"data": "no/such/folder"}, "--data"),
])
def test_bad_options_are_refused_before_ray_starts(task, tmp_path, overrides, flag):
    with pytest.raises(ConfigError, match=flag):
        train_fold(dataclasses.replace(_cfg(task, tmp_path), **overrides))


def test_arrays_made_with_other_plans_are_refused_before_ray_starts(task, tmp_path):
    data = shutil.copytree(task, tmp_path / "3d")
    plans = load_plans(data)
    save_plans(data, dataclasses.replace(plans, spacing=[2 * s for s in plans.spacing]))
    with pytest.raises(ConfigError, match="--data: .*rerun `nnunet-ray preprocess`"):
        train_fold(_cfg(data, tmp_path))


def test_missing_splits_names_the_data_flag(task, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "plans.json").write_text((task / "plans.json").read_text())
    with pytest.raises(ConfigError, match="--data: .*splits.json not found"):
        train_fold(_cfg(tmp_path / "data", tmp_path))


def test_run_name_is_stable():
    plans = make_test_plans(dataset="Task04_Hippocampus")
    assert run_name(TrainConfig(dim=2, fold=3), plans) == "Task04_Hippocampus_2d_fold3"
    assert run_name(TrainConfig(experiment="lr_sweep_7"), plans) == "lr_sweep_7"


def test_two_worker_ddp_run_then_refuse_then_resume(task, tmp_path):
    cfg = _cfg(task, tmp_path)
    summary = train_fold(cfg)
    run_dir = tmp_path / "Task97_Tiny_3d_fold0"
    assert summary["run_dir"] == str(run_dir) and summary["epochs"] == 2
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1]
    for record in records:
        assert 0.0 <= record["dice_mean"] <= 1.0 and record["val_cases"] == 2
        assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    assert summary["best_dice"] == max(r["dice_mean"] for r in records)
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("val/dice_mean")] == [0, 1]
    assert len(acc.Images("val/overlay")) == 2
    last = load_checkpoint(summary["last_checkpoint"])
    assert last["progress"]["epoch"] == 1
    model, plans, config = load_model(summary["best_checkpoint"])
    assert config.train.workers == 2 and plans.patch_size == (16, 16, 16)
    trained_on = splits_hash(load_splits(task))  # the folds are recorded with the run
    assert summary["splits_hash"] == config.splits_hash == last["config"].splits_hash == trained_on
    assert model(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 4, 16, 16, 16)

    assert run_exists(run_dir)  # Ray's snapshot file is where ray_internals says it is
    with pytest.raises(ConfigError, match="--resume-training"):
        train_fold(cfg)  # a finished run of that name: Ray would silently resume it

    start = time.perf_counter()
    with pytest.raises(ConfigError, match="^--norm: 'batch', but run 'Task97_Tiny_3d_fold0' was trained with"):
        train_fold(dataclasses.replace(cfg, norm="batch", resume_training=True))
    assert time.perf_counter() - start < 5  # refused on the driver, not after --max-failures worker restarts
    other_folds = shutil.copytree(task, tmp_path / "other_folds")
    splits = load_splits(task)
    save_splits(other_folds, [splits[0], splits[2], splits[1]])  # fold 0 alike, the others swapped
    with pytest.raises(ConfigError, match="^--data: its splits.json .* not the one run 'Task97_Tiny_3d_fold0' was"):
        train_fold(dataclasses.replace(cfg, data=str(other_folds), resume_training=True))

    resumed = train_fold(dataclasses.replace(cfg, max_epochs=3, resume_training=True))
    assert resumed["epochs"] == 3 and _epochs(run_dir) == [0, 1, 2]
    state = load_checkpoint(resumed["last_checkpoint"])
    assert state["progress"]["epoch"] == 2
    # One step per epoch on each worker (2 cases, batch 2): the optimizer continued from step 2, not from 0.
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {3}


def test_killed_worker_restarts_from_checkpoint_without_gap_or_repeat(task, tmp_path):
    marker = tmp_path / "killed.txt"
    cfg = _cfg(task, tmp_path / "results", max_epochs=4, skip_first_n_eval=1, experiment="fault")
    summary = train_fold(cfg, worker_faults={"kill_at_epoch": 2, "kill_marker": str(marker)})
    assert marker.read_text().startswith("killed rank 1 at epoch 2")  # the worker really died, once
    run_dir = tmp_path / "results" / "fault"
    records = read_metrics(run_dir / "metrics.jsonl")
    # A checkpoint reported within Ray's poll interval before the crash can be lost; then that epoch is redone,
    # and its first line is dropped when the restarted run truncates the log: one line per epoch either way.
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[0]["dice_mean"] is None and all(0 <= r["dice_mean"] <= 1 for r in records[1:])
    assert summary["epochs"] == 4 and load_checkpoint(summary["last_checkpoint"])["progress"]["epoch"] == 3


def test_train_benchmark_writes_perf_json_through_the_benchmark_path(task, tmp_path):
    # `nnunet-ray train --benchmark` calls train_fold with benchmark=True: it must take benchmark_train's path.
    perf = train_fold(_cfg(task, tmp_path, workers=1, warmup=1, train_batches=3, benchmark=True))
    run_dir = tmp_path / "Task97_Tiny_3d_fold0_bench_1w"
    assert json.loads((run_dir / "perf.json").read_text()) == perf
    assert not list(tmp_path.rglob("summary.json"))  # no summary of nulls
    assert perf["timed_steps"] == 3 and perf["world_size"] == 1 and perf["global_batch"] == 2
    assert perf["throughput_train"] == pytest.approx(2000 / perf["latency_train_mean"])
    assert not run_exists(run_dir)  # nothing to resume: reruns start afresh


@pytest.mark.slow
def test_one_worker_learns_the_synthetic_task(tmp_path):
    task = build_tiny_task(tmp_path / "task", cases=8, size=32, folds=4, filters=[8, 16, 32, 64])
    cfg = _cfg(task, tmp_path / "results", workers=1, max_epochs=40, train_batches=25, learning_rate=3e-3,
               warmup=1, image_every=0, experiment="learn")
    summary = train_fold(cfg)
    assert summary["best_dice"] >= 0.7, read_metrics(tmp_path / "results" / "learn" / "metrics.jsonl")
