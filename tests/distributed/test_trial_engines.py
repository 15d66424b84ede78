"""Which engine trains a trial, what it declares to Tune, and a trial whose process dies mid-run.

A single-worker fold trains inside its Tune trial (``--engine tune``, the default for one worker) and declares its
device(s) to Tune; several workers (or ``--engine train``) run on Ray Train with a small driver share.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import pytest
import ray
import torch
from ray.util.state import list_actors

from nnunet_ray.config import ConfigError, CVConfig, TrainConfig, TuneConfig
from nnunet_ray.data.folds import load_splits, save_splits, splits_hash
from nnunet_ray.distributed.cluster import DRIVER_RESOURCE
from nnunet_ray.distributed.cv import run_cv, trial_train_config
from nnunet_ray.distributed.experiment import run_tuner, trial_trainable
from nnunet_ray.distributed.trial_data import check_resumed_splits
from nnunet_ray.distributed.trial_fit import trial_device
from nnunet_ray.distributed.trial_spec import DRIVER_CPUS, TrialSpec, declared_resources
from tests.training.conftest import build_tiny_task

TRAIN = dict(max_epochs=4, min_epochs=1, train_batches=1, batch_size=2, dali_threads=1, warmup=0, image_every=0)


def _spec(*, gpus: float = 0.0, workers: int = 1, engine: str = "auto", results: str = "/r") -> TrialSpec:
    base = trial_train_config(TrainConfig(**TRAIN), gpus=gpus, workers=workers, results=results)
    return TrialSpec(base=base, data_dirs={3: "/data"}, dims=(3,), folds=(0,), engine=engine)


@pytest.mark.parametrize("gpus, workers, engine, declared", [
    (0.5, 1, "auto", {"cpu": 1.0, "gpu": 0.5}),  # two such trials share one GPU
    (1, 1, "auto", {"cpu": 1.0, "gpu": 1.0}),
    (0, 1, "auto", {"cpu": 1.0, "gpu": 0.0}),
    (0, 1, "train", {"cpu": DRIVER_CPUS}),  # Ray Train's workers reserve their own resources
    (0, 2, "auto", {"cpu": DRIVER_CPUS}),
    (2, 1, "auto", {"cpu": DRIVER_CPUS}),
])
def test_declared_resources(gpus, workers, engine, declared):
    spec = _spec(gpus=gpus, workers=workers, engine=engine)
    assert declared_resources(spec) == declared
    assert spec.in_trial == ("gpu" in declared)
    # What Tune itself will reserve for each trial (its placement group's bundle).
    bundle = trial_trainable(spec, None)._resources.required_resources
    assert bundle == {k.upper(): v for k, v in declared.items() if v > 0}


@pytest.mark.parametrize("values, flag", [
    ({"gpus_per_trial": 1.5}, "--gpus-per-trial: 1.5: several GPUs must be whole"),
    ({"gpus_per_trial": 0.5, "workers_per_trial": 2}, "--gpus-per-trial: 0.5: a shared GPU fraction runs one"),
    ({"gpus_per_trial": -1}, "--gpus-per-trial: must be >= 0"),
    ({"workers_per_trial": 2, "engine": "tune"}, "--engine: tune trains one worker per trial"),
    ({"gpus_per_trial": 2, "engine": "tune"}, "--engine: tune trains one worker per trial"),
    ({"engine": "ray"}, "--engine"),
])
@pytest.mark.parametrize("config", [CVConfig, TuneConfig])
def test_resources_a_trial_cannot_use_are_refused(config, values, flag):
    with pytest.raises(ConfigError, match=flag):
        config(data="d", results="r", **values).validate()


def test_a_fraction_of_a_gpu_for_one_run_is_accepted():
    CVConfig(data="d", results="r", gpus_per_trial=0.5).validate()
    assert TrainConfig(data="d", results="r", gpus=0.5).validate().world_size == 1
    with pytest.raises(ConfigError, match="--gpus: 1.5"):
        TrainConfig(data="d", results="r", gpus=1.5).validate()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_tiny_task(tmp_path_factory.mktemp("engines"), cases=6, folds=3)


def test_a_trial_whose_process_dies_restarts_from_its_last_checkpoint(task, tmp_path):
    """The trial's process exits (os._exit) at the start of epoch 2, after epoch 1's checkpoint: Tune restarts the
    trial, which continues at epoch 2 from that checkpoint; no epoch is trained twice or skipped."""
    marker = tmp_path / "killed"
    spec = _spec(results=str(tmp_path / "results" / "killed"))
    spec = TrialSpec(**{**spec.__dict__, "data_dirs": {3: str(task)}})
    results = run_tuner(spec, path=spec.base.results, resume=False, address="",
                        faults={"kill_at_epoch": 2, "kill_marker": str(marker)})
    assert marker.is_file() and not results.errors
    run = tmp_path / "results" / "killed" / "3d_fold0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["engine"] == "tune" and summary["start_epoch"] == 2 and summary["epochs"] == 4
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]
    assert {p.name for p in run.glob("epoch_*")} <= {"epoch_0001", "epoch_0002", "epoch_0003"}
    assert (run / "epoch_0003").is_dir() and summary["last_checkpoint"] == str(run / "epoch_0003")


def test_one_cpu_trials_run_two_at_a_time_without_a_train_controller(task, tmp_path):
    """Three 1-CPU folds on the 2-CPU cluster: Tune places two at once by their declared CPUs, and no Ray Train
    controller (nor its placement-group cleaner) is created."""
    controllers = len(_train_controllers())
    cfg = CVConfig(data=str(task), results=str(tmp_path / "results"), folds="0-2", name="cv",
                   train=TrainConfig(**{**TRAIN, "max_epochs": 3, "train_batches": 2}))
    run_cv(cfg)
    spans = [json.loads(p.read_text()) for p in (tmp_path / "results" / "cv").glob("3d_fold*/summary.json")]
    assert len(spans) == 3 and {s["engine"] for s in spans} == {"tune"}
    assert {s["splits_hash"] for s in spans} == {splits_hash(load_splits(task))}
    # --resume on other folds (a `preprocess --new-splits` since) is refused, naming a run; the same folds pass.
    check_resumed_splits(str(tmp_path / "results" / "cv"), {3: str(task)})
    other = tmp_path / "other_folds"
    save_splits(other, load_splits(task)[::-1])
    with pytest.raises(ConfigError, match=r"^--data: its splits.json .* not the one run '3d_fold\d' was trained on"):
        check_resumed_splits(str(tmp_path / "results" / "cv"), {3: str(other)})
    first, second = sorted(spans, key=lambda s: s["started_at"])[:2]
    assert second["started_at"] < first["finished_at"]  # overlapping: two at once
    assert len(_train_controllers()) == controllers


def _train_controllers() -> list:
    actors = list_actors(address=ray.get_runtime_context().gcs_address, limit=10000, raise_on_missing_output=False)
    return [a for a in actors if "TrainController" in a.class_name]


@pytest.mark.slow
def test_two_worker_trials_run_one_at_a_time_on_ray_train(task, tmp_path):
    """``--workers-per-trial 2`` on 2 CPUs: each trial is a Ray Train run holding both CPUs, so one at a time."""
    cfg = CVConfig(data=str(task), results=str(tmp_path / "results"), folds="0-1", name="cv2", workers_per_trial=2,
                   train=TrainConfig(**{**TRAIN, "max_epochs": 1}))
    run_cv(cfg)
    spans = sorted((json.loads(p.read_text()) for p in (tmp_path / "results" / "cv2").glob("3d_fold*/summary.json")),
                   key=lambda s: s["started_at"])
    assert [s["engine"] for s in spans] == ["train", "train"]
    assert spans[1]["started_at"] >= spans[0]["finished_at"] - 1.0  # the driver's summary lags its run's end


@pytest.mark.slow
def test_a_ray_train_trial_whose_driver_dies_is_retried_and_resumes_its_run(task, tmp_path):
    """The Tune trial that drives a Ray Train run is killed (its node lost) after the run's epoch-1 checkpoint: Tune
    retries the trial (``TRAIN_DRIVER_RETRIES``), whose new run continues from Ray Train's latest checkpoint; no
    epoch is trained twice or skipped beyond those after it."""
    results = tmp_path / "results" / "driver"
    spec = _spec(engine="train", results=str(results))
    spec = TrialSpec(**{**spec.__dict__, "data_dirs": {3: str(task)},
                        "base": dataclasses.replace(spec.base, train_batches=10)})
    run, seen = results / "3d_fold0", {}
    killer = threading.Thread(target=_kill_driver_after_epoch_1, args=(run, seen))
    killer.start()
    grid = run_tuner(spec, path=str(results), resume=False, address="")
    killer.join()
    assert seen.get("killed") and not grid.errors
    summary = json.loads((run / "summary.json").read_text())
    assert summary["engine"] == "train" and summary["epochs"] == 4
    assert 2 <= summary["start_epoch"] <= 3  # after the registered epoch 1 (or a later one registered meanwhile)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]


def _kill_driver_after_epoch_1(run, seen: dict) -> None:
    """SIGKILL the trial's driver (the process is gone as with its node) once Ray Train has registered the epoch-1
    checkpoint (its snapshot names it: a folder Ray has not registered yet is not a checkpoint to resume from)."""
    snapshot, deadline = run / "checkpoint_manager_snapshot.json", time.monotonic() + 300
    while not (snapshot.is_file() and "epoch_0001" in snapshot.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    drivers = [a for a in list_actors(address=ray.get_runtime_context().gcs_address, limit=10000,
                                      filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
               if a.class_name.endswith("ImplicitFunc")]
    for driver in drivers:
        os.kill(driver.pid, signal.SIGKILL)
    seen["killed"] = bool(drivers)


def test_ray_train_drivers_ask_for_the_heads_driver_resource_where_the_cluster_has_it():
    """cluster.yaml's on-demand head advertises it (and has no CPUs): a Ray Train trial's driver, and the Train
    controller Ray places beside it, go there; a fold trained in its trial runs on the workers as before."""
    cluster = {"CPU": 16.0, "GPU": 2.0, DRIVER_RESOURCE: 64.0}
    assert declared_resources(_spec(gpus=2), cluster) == {"cpu": 0.0, DRIVER_RESOURCE: 1.0}
    assert declared_resources(_spec(gpus=1), cluster) == {"cpu": 1.0, "gpu": 1.0}
    assert declared_resources(_spec(gpus=2), {"CPU": 16.0, "GPU": 2.0}) == {"cpu": DRIVER_CPUS}


def test_a_trial_device_is_indexed_so_dali_augments_on_that_gpu():
    """An unindexed ``cuda`` device gave the loader ``device_id=None``: a CPU-only DALI pipeline on a GPU trial."""
    from nnunet_ray.loading.fold_data import _cuda_index

    assert _cuda_index(torch.device("cpu")) is None and _cuda_index(torch.device("cuda", 1)) == 1
    device = trial_device(TrainConfig(gpus=1.0))
    if torch.cuda.is_available():
        assert device.type == "cuda" and device.index is not None
    else:
        assert device == torch.device("cpu")
