"""`cv`, `evaluate --cv`, `predict` and `evaluate` on an s3:// results root (a real S3-compatible server on
127.0.0.1): preprocessing, checkpoints, metrics, TensorBoard events, summaries and predictions are objects in the
bucket; a resumed cross-validation finds its finished trials there and trains none again; a rerun prediction
skips the cases already in the bucket."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.config import ConfigError, CVConfig, EvaluateConfig, PredictConfig, SynthConfig, TrainConfig
from nnunet_ray.data import storage
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.cv import SUMMARY_CSV, SUMMARY_JSON, run_cv
from nnunet_ray.distributed.cv_eval import evaluate_cv
from nnunet_ray.distributed.predict import RECORD, predict_folder
from nnunet_ray.evaluation.report import evaluate_folders
from nnunet_ray.runs.best_configuration import BEST_CONFIGURATION_FILE
from tests.conftest import new_s3_root

pytestmark = pytest.mark.slow  # two Tune + Train trials and three prediction runs: about a minute on 2 cores

TRIALS = ("3d_fold0", "3d_fold1")


def _cv_config(raw: Path, results: str, **overrides) -> CVConfig:
    train = TrainConfig(max_epochs=1, min_epochs=1, train_batches=1, batch_size=2, dali_threads=1, warmup=0,
                        val_cases=1)
    return CVConfig(**{"data": str(raw), "results": results, "dims": "3", "folds": "0,1", "name": "cv", "train": train,
                       **overrides})


@pytest.fixture(scope="module")
def experiment(s3_server, tmp_path_factory):
    """A raw synthetic task (local) cross-validated into a bucket, then resumed: (raw, root, experiment, objects
    of each trial before the resume)."""
    raw = tmp_path_factory.mktemp("raw") / "Task98_S3"
    make_synthetic_task(SynthConfig(out=str(raw), cases=6, test=2, size=24, seed=0).validate())
    root = new_s3_root(s3_server)
    run_cv(_cv_config(raw, root))
    path = storage.join(root, "cv")
    before = {t: {n: storage.read_bytes(storage.join(path, t, n)) for n in ("summary.json", "metrics.jsonl")}
              for t in TRIALS}
    resumed = run_cv(_cv_config(raw, root, resume=True))
    return raw, root, path, before, resumed


def test_cv_keeps_preprocessing_runs_and_summaries_in_the_bucket(experiment):
    raw, root, path, _, _ = experiment
    assert {"plans.json", "splits.json"} <= set(storage.list_names(storage.join(root, "preprocessed", raw.name, "3d")))
    assert {"tuner.pkl", "experiment.json", SUMMARY_CSV, SUMMARY_JSON, *TRIALS} <= set(storage.list_names(path))
    for trial in TRIALS:
        run = storage.join(path, trial)
        names = storage.list_names(run)
        assert {"epoch_0000", "metrics.jsonl", "tensorboard", "summary.json"} <= set(names)
        assert storage.is_file(storage.join(run, "epoch_0000", "model.pt"))
        events = storage.list_names(storage.join(run, "tensorboard"))
        assert any(e.startswith("events.out.tfevents") and not e.endswith(".hparams") for e in events)  # scalars
        assert any(e.endswith(".hparams") for e in events)  # HParamsCallback's record, uploaded
    assert storage.read_text(storage.join(path, SUMMARY_CSV)).startswith("dim,fold,best_epoch")


def test_resumed_cv_reruns_no_trial(experiment):
    _, _, path, before, resumed = experiment
    for trial, files in before.items():
        for name, content in files.items():
            assert storage.read_bytes(storage.join(path, trial, name)) == content, f"{trial}/{name} rewritten"
    assert list(resumed["fold"][:2]) == ["0", "1"]


def test_existing_experiment_in_the_bucket_needs_resume(experiment):
    raw, root, _, _, _ = experiment
    with pytest.raises(ConfigError, match=r"^--name: experiment 'cv' already exists in s3://test-[0-9a-f]+/root; "):
        run_cv(_cv_config(raw, root))


def test_predict_and_evaluate_read_and_write_the_bucket(experiment):
    raw, root, path, _, _ = experiment
    result = evaluate_cv(EvaluateConfig(cv=path, data=str(raw), actors=1))
    assert [r["run"] for r in result["runs"]] == list(TRIALS)
    assert storage.is_file(storage.join(path, BEST_CONFIGURATION_FILE))
    assert storage.is_file(storage.join(path, "cv_original_space.csv"))

    out = storage.join(root, "preds")
    cfg = PredictConfig(models=(path,), input=str(raw), out=out, actors=1)
    summary = predict_folder(cfg)
    assert summary.ok and sorted(summary.done) == ["synth_006", "synth_007"]
    record = storage.read_json(storage.join(out, RECORD))
    assert all(m["path"].startswith("s3://") and m["path"].endswith(root.partition("?")[2]) for m in record["members"])
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("synth_006", "synth_007"):
            storage.download(storage.join(out, f"{case}.nii.gz"), Path(tmp) / f"{case}.nii.gz")
            predicted, image = nib.load(Path(tmp) / f"{case}.nii.gz"), nib.load(raw / "imagesTs" / f"{case}.nii.gz")
            assert predicted.shape == image.shape[:3] and np.allclose(predicted.affine, image.affine)
    assert sorted(predict_folder(cfg).skipped) == ["synth_006", "synth_007"]  # already in the bucket

    scores = evaluate_folders(out, raw / "labelsTs")
    assert scores["n_cases"] == 2 and 0 <= scores["mean"]["dice"] <= 1
    assert storage.read_json(storage.join(out, "summary.json"))["n_cases"] == 2


def test_cv_on_ray_train_keeps_the_same_run_layout_in_the_bucket(experiment, s3_server):
    """The same one-fold CV with ``--engine train`` (Ray Train persists the checkpoints): the same files, and the
    summary names the engine."""
    raw, _, _, _, _ = experiment
    root = new_s3_root(s3_server)
    run_cv(_cv_config(raw, root, engine="train", folds="0"))
    run = storage.join(root, "cv", "3d_fold0")
    assert {"epoch_0000", "metrics.jsonl", "tensorboard", "summary.json"} <= set(storage.list_names(run))
    assert storage.read_json(storage.join(run, "summary.json"))["engine"] == "train"
    assert storage.read_json(storage.join(experiment[2], TRIALS[0], "summary.json"))["engine"] == "tune"
