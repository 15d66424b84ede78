"""`nnunet-ray predict` on a real 2-actor Ray pool: every case written, a corrupt case named, reruns skip."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.cli import main
from nnunet_ray.config import ConfigError, PredictConfig
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.distributed.predict import predict_folder
from nnunet_ray.inference.ensemble import EnsemblePredictor
from nnunet_ray.inference.members import load_member
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
    with pytest.raises(ConfigError, match="--out: .* holds predictions of other members or options"):
        predict_folder(PredictConfig(models=(str(experiment),), input=str(synth_task), out=str(out), tta=True))
