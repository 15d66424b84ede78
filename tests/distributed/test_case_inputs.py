"""Raw images on object storage for `predict --input` and `evaluate --cv --data` (a local S3 stand-in): cases found
from a listing, each downloaded by the actor predicting it, the same outputs as from a local folder, reruns that
download nothing predicted; and a node that cannot read the input stops the command in one line before any actor."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray import cli
from nnunet_ray.config import EvaluateConfig, PredictConfig
from nnunet_ray.data import storage
from nnunet_ray.data.credentials import ACCESS_KEY, SECRET_KEY
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import kfold_splits, save_splits
from nnunet_ray.data.prediction_inputs import labelled_dataset, local_case, open_inputs
from nnunet_ray.data.types import CaseError, DatasetError
from nnunet_ray.distributed.cv_eval import evaluate_cv
from nnunet_ray.distributed.predict import predict_folder, predict_folders
from nnunet_ray.evaluation.report import METRICS, evaluate_folders
from tests.distributed.test_s3_storage import S3StandIn, uri_credentials_undone  # noqa: F401 - a fixture
from tests.inference.conftest import save_random_checkpoint, tiny_plans


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, synth_task):
    """One 3D run (fold 0 of 3) with a random tiny network, its splits.json in a preprocessed folder."""
    root = tmp_path_factory.mktemp("experiment")
    ids = [c.case_id for c in load_dataset(synth_task).training]
    save_splits(root / "pre", kfold_splits(ids, n_splits=3))
    save_random_checkpoint(root / "cv" / "Task99_Synth_3d_fold0" / "epoch_0001", tiny_plans(synth_task, 3),
                           data=str(root / "pre"), progress={"epoch": 1, "best_epoch": 1, "best_dice": 0.5})
    return root / "cv"


@pytest.fixture(scope="module")
def raw_uri(synth_task, s3_server):
    """The synthetic task uploaded to a bucket: its dataset root as an s3:// URI."""
    from tests.conftest import new_s3_root
    raw = storage.join(new_s3_root(s3_server), "raw", synth_task.name)
    storage.upload(synth_task, raw)
    return raw


def _label_maps(folder) -> dict[str, tuple]:
    images = {p.name: nib.load(p) for p in sorted(folder.glob("*.nii.gz"))}
    return {name: (np.asanyarray(image.dataobj), image.affine, image.header.binaryblock)
            for name, image in images.items()}


def test_predict_from_an_s3_dataset_writes_what_the_local_folder_gives_and_a_rerun_downloads_nothing(
        tmp_path, experiment, synth_task, raw_uri):
    def config(data, out):
        return PredictConfig(models=(str(experiment),), input=data, out=str(tmp_path / out), actors=1)

    # The same ensemble from the local folder and from the bucket, on one pool (one actor start, not two).
    local, remote = predict_folders([(config(str(synth_task), "a"), None), (config(raw_uri, "b"), None)])
    assert local.ok and remote.ok and remote.done == local.done == ["synth_006", "synth_007"]
    expected, written = _label_maps(tmp_path / "a"), _label_maps(tmp_path / "b")
    assert list(written) == list(expected)
    for name, (array, affine, header) in written.items():
        np.testing.assert_array_equal(array, expected[name][0])
        assert np.array_equal(affine, expected[name][1]) and header == expected[name][2]
    record = json.loads((tmp_path / "b" / "predict.json").read_text())
    size = len(storage.read_bytes(storage.join(raw_uri, "imagesTs", "synth_006.nii.gz")))
    assert record["cases"]["synth_006"]["inputs"][0][:2] == ["synth_006.nii.gz", size]  # from the listing

    again = predict_folder(config(raw_uri, "b"))
    assert again.done == [] and again.skipped == ["synth_006", "synth_007"] and again.actors == 0


def test_a_bare_s3_folder_is_listed_without_downloading_and_a_case_fetched_alone(tmp_path, synth_task, s3_root):
    images = storage.join(s3_root, "new_scans")
    storage.upload(synth_task / "imagesTs", images)
    inputs = open_inputs(images)
    assert [(c.case_id, [str(p) for p in c.images]) for c in inputs.cases] == [
        ("synth_006", ["synth_006.nii.gz"]), ("synth_007", ["synth_007.nii.gz"])]  # relative to the URI
    first = inputs.fingerprint(inputs.cases[0])
    storage.write_bytes(storage.join(images, "synth_006.nii.gz"),
                        (synth_task / "imagesTs" / "synth_007.nii.gz").read_bytes())  # the image replaced
    assert open_inputs(images).fingerprint(inputs.cases[0]) != first  # so a rerun predicts it again

    with local_case(inputs.cases[1], inputs.source) as case:
        assert case.images[0].name == "synth_007.nii.gz"
        assert case.images[0].read_bytes() == (synth_task / "imagesTs" / "synth_007.nii.gz").read_bytes()
        scratch = case.images[0].parent
    assert not scratch.exists()  # removed once predicted
    storage.delete(storage.join(images, "synth_007.nii.gz"))
    with pytest.raises(CaseError, match=r"^synth_007: cannot download an image: s3://\S+/new_scans/synth_007.nii.gz"):
        with local_case(inputs.cases[1], inputs.source):
            pass


def test_unusable_s3_inputs_are_one_line_naming_the_uri(s3_root):
    with pytest.raises(DatasetError, match=r"^s3://test-\w+/root/nothing: input folder not found$"):
        open_inputs(storage.join(s3_root, "nothing"))
    storage.write_text(storage.join(s3_root, "notes", "readme.txt"), "no images here")
    with pytest.raises(DatasetError, match=r"^s3://test-\w+/root/notes: no NIfTI images"):
        open_inputs(storage.join(s3_root, "notes"))
    storage.write_text(storage.join(s3_root, "broken", "dataset.json"), "{ truncated")
    with pytest.raises(DatasetError, match=r"^s3://test-\w+/root/broken/dataset.json: invalid JSON"):
        with labelled_dataset(storage.join(s3_root, "broken")):
            pass


def test_evaluate_cv_reads_the_raw_dataset_from_s3_and_scores_against_its_labels(tmp_path, experiment,
                                                                                 synth_task, raw_uri):
    cv = shutil.copytree(experiment, tmp_path / "cv")
    result = evaluate_cv(EvaluateConfig(cv=str(cv), data=raw_uri, actors=1))
    (row,) = result["runs"]
    validation = kfold_splits([c.case_id for c in load_dataset(synth_task).training], n_splits=3)[0]["val"]
    predictions = cv / "cv_predictions" / "Task99_Synth_3d_fold0"
    assert sorted(p.name for p in predictions.glob("*.nii.gz")) == sorted(f"{i}.nii.gz" for i in validation)
    # The same numbers as scoring those predictions against the local copy of the labels.
    scores = evaluate_folders(predictions, synth_task / "labelsTr", cases=validation, out=str(tmp_path / "s"))
    assert row["cases"] == 2 and {k: row[k] for k in METRICS} == scores["mean"]
    assert result["best"]["configuration"] == "3d" and (cv / "best_configuration.json").is_file()


def test_a_node_that_cannot_read_the_input_stops_predict_in_one_line_before_any_actor(
        tmp_path, experiment, synth_task, monkeypatch, capsys, uri_credentials_undone):  # noqa: F811
    """The driver has the store's credentials in its environment; the cluster's nodes (started before) do not."""
    server = S3StandIn(key="AKIAPROBE")
    server.start()
    try:
        root = server.new_root(secret="probe-secret")
        storage.upload(synth_task / "imagesTs", storage.join(root, "scans"))
        monkeypatch.setenv(ACCESS_KEY, "AKIAPROBE")
        monkeypatch.setenv(SECRET_KEY, "probe-secret")
        scans = storage.join(root.replace("AKIAPROBE:probe-secret@", ""), "scans")
        out = tmp_path / "preds"
        status = cli.main(["predict", "--models", str(experiment), "--input", scans, "--out", str(out)])
    finally:
        server.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and [line for line in err if "error" in line] == err[-1:], err
    assert re.match(rf"^nnunet-ray predict: error: node \S+ \([0-9a-f]{{8}}\) cannot read --input "
                    rf"{re.escape(storage.display(scans))}/synth_006.nii.gz: .*ACCESS_DENIED", err[-1]), err[-1]
    assert not (out / "predict.json").exists()  # stopped before the record and the pool
