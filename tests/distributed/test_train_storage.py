"""Training with --data and --results on s3:// (a real S3-compatible server on 127.0.0.1): checkpoints, metrics,
TensorBoard events and the summary land in the bucket, the data is staged to local disk, and a resumed run finds
its earlier epochs there."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nnunet_ray.config import ConfigError, TrainConfig
from nnunet_ray.data import staging, storage
from nnunet_ray.distributed.run_storage import LogMirror, location_of, stage_key
from nnunet_ray.distributed.train import train_fold
from nnunet_ray.planning.schema import load_plans
from tests.training.conftest import build_tiny_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_tiny_task(tmp_path_factory.mktemp("task"), dim=3)


def _cfg(data, results, **overrides):
    base = dict(data=data, results=results, dim=3, fold=0, workers=2, max_epochs=2, min_epochs=1, warmup=0,
                batch_size=2, dali_threads=1, image_every=1, max_failures=1)
    return TrainConfig(**{**base, **overrides})


def _metrics_epochs(run_dir: str) -> list[int]:
    text = storage.read_text(storage.join(run_dir, "metrics.jsonl"))
    return [json.loads(line)["epoch"] for line in text.splitlines()]


def test_a_run_on_s3_keeps_everything_in_the_bucket_and_resumes_from_it(task, s3_root):
    data = storage.join(s3_root, "pre", task.name, "3d")
    storage.upload(task, data)
    results = storage.join(s3_root, "results")
    summary = train_fold(_cfg(data, results))

    run_dir = storage.join(results, summary["name"])
    assert summary["run_dir"] == run_dir
    names = storage.list_names(run_dir)
    # Ray keeps the best and the latest checkpoint: epoch 1 is both here.
    assert {"epoch_0001", "metrics.jsonl", "tensorboard", "summary.json", "checkpoint_manager_snapshot.json"} \
        <= set(names)
    assert _metrics_epochs(run_dir) == [0, 1]
    assert any(n.startswith("events.out.tfevents") for n in storage.list_names(storage.join(run_dir, "tensorboard")))
    assert storage.read_json(storage.join(run_dir, "summary.json"))["epochs"] == 2
    assert storage.is_file(storage.join(summary["last_checkpoint"], "model.pt"))  # opens: credentials, endpoint
    assert summary["last_checkpoint"].startswith("s3://") and summary["last_checkpoint"].endswith(
        s3_root.partition("?")[2])

    staged = staging.stage_root() / stage_key(load_plans(data), 3)
    assert (staged / staging.MARKER).is_file() and (staged / "splits.json").is_file()

    with pytest.raises(ConfigError, match="^--norm: 'batch', but run 'Task97_Tiny_3d_fold0' was trained with"):
        train_fold(_cfg(data, results, norm="batch", resume_training=True))  # the checkpoint read from the bucket

    resumed = train_fold(_cfg(data, results, max_epochs=3, resume_training=True))
    assert resumed["epochs"] == 3
    assert _metrics_epochs(run_dir) == [0, 1, 2]  # the earlier epochs came back from the bucket, none repeated


def test_an_unreachable_results_bucket_fails_before_training(task, s3_server):
    results = f"s3://test:test@no-such-bucket/res?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    with pytest.raises(ConfigError, match=r"^--results: cannot write s3://no-such-bucket/res"):
        train_fold(_cfg(str(task), results))


def test_data_missing_on_s3_names_the_data_flag(s3_root):
    with pytest.raises(ConfigError, match=r"^--data: no plans.json in s3://"):
        train_fold(_cfg(storage.join(s3_root, "nothing"), storage.join(s3_root, "results")))


def test_location_of_rebuilds_a_uri_with_its_credentials_and_options():
    root = "s3://k:s@bucket/results?endpoint_override=h:1&scheme=http"
    assert location_of(root, "bucket/results/run/epoch_0001") == \
        "s3://k:s@bucket/results/run/epoch_0001?endpoint_override=h:1&scheme=http"
    assert location_of("/local/results", "/local/results/run/epoch_0001") == "/local/results/run/epoch_0001"


def test_missing_splits_on_s3_names_the_data_flag_and_the_uri(task, s3_root):
    data = storage.join(s3_root, "nosplits")
    storage.upload(task / "plans.json", storage.join(data, "plans.json"))
    with pytest.raises(ConfigError, match=r"^--data: s3://[^ ]+/nosplits/splits.json not found"):
        train_fold(_cfg(data, storage.join(s3_root, "results")))


def test_arrays_on_s3_made_with_other_plans_are_refused_before_ray_starts(task, s3_root):
    data = storage.join(s3_root, "stale", task.name, "3d")
    storage.upload(task, data)
    plans = load_plans(task)
    other = dataclasses.replace(plans, spacing=tuple(2 * s for s in plans.spacing))
    storage.write_json(storage.join(data, "plans.json"), other.to_json())
    refused = r"^--data: .* s3://[^ ]+/stale/.*/plans.json .*rerun `nnunet-ray preprocess`"
    with pytest.raises(ConfigError, match=refused):
        train_fold(_cfg(data, storage.join(s3_root, "results")))


def test_log_uploads_are_snapshots_in_order_and_close_uploads_the_last(s3_root):
    run_dir = storage.join(s3_root, "run")
    mirror = LogMirror(run_dir)
    metrics = mirror.local_dir / "metrics.jsonl"
    metrics.write_text('{"epoch": 0}\n')
    mirror.push()  # returns while the upload runs in the background
    metrics.write_text('{"epoch": 0}\n{"epoch": 1')  # half an epoch written later: not in that upload
    mirror.push(wait=True)  # the first upload finished before this one started
    assert storage.read_text(storage.join(run_dir, "metrics.jsonl")) == '{"epoch": 0}\n{"epoch": 1'
    metrics.write_text('{"epoch": 0}\n{"epoch": 1}\n')
    (mirror.local_dir / "tensorboard").mkdir()
    (mirror.local_dir / "tensorboard" / "events.out").write_bytes(b"event")
    mirror.close()
    assert _metrics_epochs(run_dir) == [0, 1]
    assert storage.read_bytes(storage.join(run_dir, "tensorboard", "events.out")) == b"event"
    assert not mirror.local_dir.exists()


def test_a_failed_log_upload_surfaces_at_the_next_push(tmp_path, s3_server):
    options = f"endpoint_override={s3_server}&scheme=http&region=us-east-1"
    mirror = LogMirror(f"s3://test:test@no-such-bucket/run?{options}")
    (mirror.local_dir / "metrics.jsonl").write_text("{}\n")
    mirror.push()
    with pytest.raises(OSError):
        mirror.push()
    mirror._uploader.shutdown()
