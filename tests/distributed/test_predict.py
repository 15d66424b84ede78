"""`nnunet-ray predict` on a real Ray actor pool: every case written, a corrupt case named, reruns skip the cases
predict.json records as done and refuse folders of other members or options, a killed actor's case is retried."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import ray

import nnunet_ray.distributed.predict as predict_module
from nnunet_ray.cli import main
from nnunet_ray.config import ConfigError, PredictConfig
from nnunet_ray.data import storage
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.distributed import predict_pool
from nnunet_ray.distributed.predict import claim_folder, predict_folder
from nnunet_ray.distributed.predict_pool import CaseTask, PredictActor
from nnunet_ray.inference.ensemble import EnsemblePredictor
from nnunet_ray.inference.members import load_member
from nnunet_ray.inference.record import PredictRecord, write_record
from tests.inference.conftest import save_random_checkpoint, tiny_plans


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, synth_task):
    """An experiment folder with two runs (folds 0 and 1) of the 3D configuration."""
    root = tmp_path_factory.mktemp("experiment")
    plans = tiny_plans(synth_task, 3)
    for fold in (0, 1):
        save_random_checkpoint(root / f"fold{fold}" / "epoch_0000", plans, seed=fold, fold=fold,
                               progress={"epoch": 0, "best_epoch": 0})
    return root


@pytest.fixture()
def images(tmp_path, synth_task):
    """A bare folder: the synthetic test images, a few training images and one corrupt file."""
    folder = tmp_path / "images"
    folder.mkdir()
    dataset = load_dataset(synth_task)
    for case in (*dataset.test, *dataset.training[:2]):
        shutil.copy(case.images[0], folder / case.images[0].name)
    (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8b this is not gzip data")
    image = nib.load(str(dataset.test[0].images[0]))
    two = np.stack([np.asanyarray(image.dataobj)] * 2, axis=-1)  # (x, y, z, 2): the models expect 1 channel
    nib.save(nib.Nifti1Image(two, image.affine), str(folder / "twochannel.nii.gz"))
    return folder


def test_two_actor_pool_predicts_every_case_and_names_the_corrupt_one(tmp_path, experiment, images, capsys):
    out = tmp_path / "preds"
    argv = ["predict", "--models", str(experiment), "--input", str(images), "--out", str(out), "--actors", "2",
            "--save-probabilities"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "error: corrupt: cannot read image corrupt.nii.gz" in captured.err
    assert "error: twochannel: image has 2 channels, plans expect 1" in captured.err
    assert "4 predicted, 0 already done, 2 failed" in captured.out and "on 2 actor(s)" in captured.out
    bad = {"corrupt.nii.gz", "twochannel.nii.gz"}
    expected = sorted(p.name.replace(".nii.gz", "") for p in images.iterdir() if p.name not in bad)
    assert sorted(p.name[: -len(".nii.gz")] for p in out.glob("*.nii.gz")) == expected
    for case_id in expected:
        written, source = nib.load(str(out / f"{case_id}.nii.gz")), nib.load(str(images / f"{case_id}.nii.gz"))
        assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-5)
        assert np.load(out / f"{case_id}.npz")["probabilities"].shape[1:] == source.shape[::-1]
    record = json.loads((out / "predict.json").read_text())
    assert [m["fold"] for m in record["members"]] == [0, 1]
    assert record["cases"]["corrupt"]["status"] == "failed" and record["cases"][expected[0]]["seconds"] > 0
    assert record["options"]["actors"] == 2 and record["labels"]["1"] == "organ"

    assert main(argv) == 1  # the rerun skips the finished cases and retries only the failed ones
    assert "predicting 2 of 6 cases" in capsys.readouterr().err  # progress is logged (stderr)


def test_the_pool_writes_what_the_in_process_ensemble_predicts(tmp_path, experiment, synth_task):
    out = tmp_path / "preds"
    summary = predict_folder(PredictConfig(models=(str(experiment),), input=str(synth_task), out=str(out),
                                           actors=1))
    assert summary.ok and len(summary.done) == 2
    case = load_dataset(synth_task).test[0]
    members = [load_member(experiment / f"fold{f}" / "epoch_0000") for f in (0, 1)]
    expected = EnsemblePredictor(members)(case).argmax(0)
    written = np.asanyarray(nib.load(str(out / f"{case.case_id}.nii.gz")).dataobj)
    np.testing.assert_array_equal(written, expected.transpose(2, 1, 0))
    # The folder now belongs to this ensemble and these options: other options are refused before any work.
    with pytest.raises(ConfigError, match=r"--out: .* holds predictions made with other --tta False \(now True\)"):
        predict_folder(PredictConfig(models=(str(experiment),), input=str(synth_task), out=str(out), tta=True))


def _config(experiment, synth_task, out, **options) -> PredictConfig:
    return PredictConfig(models=(str(experiment),), input=str(synth_task), out=str(out), actors=1, **options)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class _Killed(Exception):
    """Stands in for the driver being killed (SIGKILL, Ctrl-C) just after a case landed."""


def test_a_killed_run_is_continued_with_the_same_options_and_refused_with_others(tmp_path, experiment, synth_task,
                                                                                monkeypatch):
    out, test_ids = tmp_path / "preds", [c.case_id for c in load_dataset(synth_task).test]
    collect = predict_module._collect

    def collect_then_die(job, result):
        record = json.loads((out / "predict.json").read_text())  # written before the first case
        assert record["planned"] == test_ids and record["cases"] == {} and record["options"]["tta"] is False
        collect(job, result)
        raise _Killed

    monkeypatch.setattr(predict_module, "_collect", collect_then_die)
    with pytest.raises(_Killed):
        predict_folder(_config(experiment, synth_task, out))
    monkeypatch.undo()
    _wait_for_no_predict_actor()  # the other case may still land from an actor the "kill" left running a moment
    record = json.loads((out / "predict.json").read_text())
    (landed, entry), = record["cases"].items()  # the case that landed is recorded as it landed
    assert entry["status"] == "done" and entry["inputs"][0][0] == f"{landed}.nii.gz"

    before = _files(out)
    with pytest.raises(ConfigError, match=rf"^--out: {out} holds predictions made with other --tta False \(now "
                                          r"True\) \(see its predict.json\); .* or pass --overwrite"):
        predict_folder(_config(experiment, synth_task, out, tta=True))
    assert _files(out) == before  # refused before any work

    summary = predict_folder(_config(experiment, synth_task, out))  # the same options: only the rest
    assert summary.skipped == [landed] and summary.done == [i for i in test_ids if i != landed]

    (out / "notes.txt").write_text("mine")
    (out / "summary.json").write_text("{}")
    summary = predict_folder(_config(experiment, synth_task, out, tta=True, overwrite=True), cases=[])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "predict.json", "summary.json"]
    record = json.loads((out / "predict.json").read_text())  # the folder now starts over with the new options
    assert record["options"]["tta"] is True and record["cases"] == {} and record["planned"] == []


def _wait_for_no_predict_actor(timeout: float = 60.0) -> None:
    """Until the pool's actors (``ray.kill``ed by the driver on its way out, asynchronously) are gone."""
    from ray.util.state import list_actors
    deadline = time.monotonic() + timeout
    address = ray.get_runtime_context().gcs_address
    while list_actors(filters=[("class_name", "=", "PredictActor"), ("state", "=", "ALIVE")], address=address):
        assert time.monotonic() < deadline, "the prediction actors outlived the driver's call"
        time.sleep(0.2)


@pytest.mark.parametrize("overwrite", [False, True])
def test_predictions_no_record_accounts_for_are_refused(tmp_path, experiment, synth_task, overwrite):
    out = tmp_path / "preds"
    out.mkdir()
    stale = load_dataset(synth_task).test[0]
    shutil.copy(stale.images[0], out / f"{stale.case_id}.nii.gz")  # same-named, but nobody vouches for it
    with pytest.raises(ConfigError, match=rf"^--out: {out} holds 1 prediction file\(s\) that no predict.json "
                                          rf"records \({stale.case_id}.nii.gz\); predict into an empty folder"):
        predict_folder(_config(experiment, synth_task, out, overwrite=overwrite))
    assert sorted(p.name for p in out.iterdir()) == [f"{stale.case_id}.nii.gz"]


def test_an_unreadable_record_is_one_line(tmp_path, experiment, synth_task, capsys):
    out = tmp_path / "preds"
    out.mkdir()
    (out / "predict.json").write_text("{ truncated")
    argv = ["predict", "--models", str(experiment), "--input", str(synth_task), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnunet-ray predict: error: --out: cannot read {out}/predict.json: ")


def test_an_out_that_is_a_file_is_refused(tmp_path, experiment, synth_task):
    (tmp_path / "preds").write_text("mine")  # the CLI refuses it earlier; the API here
    with pytest.raises(ConfigError, match=rf"^--out: {tmp_path}/preds exists and is not a folder$"):
        predict_folder(_config(experiment, synth_task, tmp_path / "preds"))


class _DiesMidCase(PredictActor):
    """A prediction actor whose process is SIGKILLed in the middle of ``synth_006`` the first time (a marker file
    next to the output folder remembers it), after its probabilities are computed and before anything is written."""

    def predict(self, task: CaseTask) -> dict:
        ensemble, marker = self.predictors[task.ensemble], Path(task.out_dir).parent / "killed_synth_006"

        def predict_then_die(case):
            probs = ensemble(case)
            if case.case_id == "synth_006" and not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return probs

        self.predictors[task.ensemble] = predict_then_die
        try:
            return super().predict(task)
        finally:
            self.predictors[task.ensemble] = ensemble


def test_a_case_whose_actor_is_killed_is_retried_on_a_new_actor(tmp_path, experiment, synth_task, monkeypatch,
                                                                capsys):
    monkeypatch.setattr(predict_pool, "PredictActor", _DiesMidCase)
    out = tmp_path / "preds"
    argv = ["predict", "--models", str(experiment), "--input", str(synth_task), "--out", str(out), "--actors", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "2 predicted, 0 already done, 0 failed" in captured.out
    assert ("warning: synth_006: its predicting actor died (The actor died unexpectedly before finishing this "
            "task.); trying again on a new actor (attempt 2 of 3)") in captured.err
    assert (tmp_path / "killed_synth_006").exists()  # it really died once
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["synth_006.nii.gz", "synth_007.nii.gz"]
    record = json.loads((out / "predict.json").read_text())
    assert {k: v["status"] for k, v in record["cases"].items()} == {"synth_006": "done", "synth_007": "done"}


def test_the_pool_gives_up_on_a_case_that_kills_every_actor_and_keeps_an_actor_whose_call_raised():
    # Stand-ins defined here are pickled by value: their actors start without importing torch or the package.
    class Actor:
        def predict(self, task):
            if task.case.case_id == "doomed":
                os.kill(os.getpid(), signal.SIGKILL)
            if task.case.case_id == "raises":
                raise ValueError("upload failed")
            return {"case_id": task.case.case_id, "status": "done", "error": None, "seconds": 0.0}

    remote = ray.remote(num_cpus=0)(Actor)
    actors = [remote.remote()]
    tasks = [SimpleNamespace(case=SimpleNamespace(case_id=i)) for i in ("doomed", "raises", "a", "b")]
    records = {}
    try:
        predict_pool.run_pool(actors, tasks, lambda task, record: records.update({task.case.case_id: record}),
                              replace=remote.remote, max_attempts=2)
    finally:
        for actor in actors:
            ray.kill(actor)
    assert records["doomed"]["error"] == ("doomed: its predicting actor died on each of 2 attempts (out of memory or "
                                          "killed?); last: The actor died unexpectedly before finishing this task.")
    assert records["raises"]["error"] == "raises: predicting failed: ValueError: upload failed"
    assert records["a"]["status"] == records["b"]["status"] == "done"
    assert len(actors) == 3  # one per death of "doomed"; the actor whose call raised kept working


def test_claiming_a_prediction_folder_on_object_storage(s3_root):
    out = storage.join(s3_root, "preds")
    earlier = PredictRecord(members=[{"weights_hash": "a"}], options={"tta": False}, largest_component=[],
                            n_classes=2, labels={}, planned=["a", "b"])
    write_record(out, earlier)
    storage.write_bytes(storage.join(out, "a.nii.gz"), b"landed")  # planned, not recorded yet: a killed run's
    storage.write_bytes(storage.join(out, "notes.txt"), b"mine")
    fresh = dataclasses.replace(earlier, options={"tta": True}, planned=[])
    with pytest.raises(ConfigError, match=r"^--out: s3://test-\w+/root/preds holds predictions made with other --tta "
                                          r"False \(now True\)"):
        claim_folder(out, fresh, overwrite=False)
    assert claim_folder(out, fresh, overwrite=True) is fresh
    assert storage.list_names(out) == ["notes.txt"]
    storage.write_bytes(storage.join(out, "c.nii.gz"), b"someone else's")
    with pytest.raises(ConfigError, match=r"holds 1 prediction file\(s\) that no predict.json records \(c.nii.gz\)"):
        claim_folder(out, fresh, overwrite=True)
