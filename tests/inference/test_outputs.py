"""Geometry round trip to the original grid, the written files, per-case failures, and finding members."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.config import ConfigError
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.inputs import input_cases
from nnunet_ray.data.types import CaseFiles, DatasetError
from nnunet_ray.inference.members import find_checkpoints
from nnunet_ray.inference.outputs import predict_case, write_prediction
from nnunet_ray.preprocessing.case import preprocess_case
from nnunet_ray.preprocessing.inverse import restore_probabilities
from nnunet_ray.preprocessing.record import read_case_record
from tests.inference.conftest import save_random_checkpoint, tiny_plans


def _oblique_case(root: Path, case: CaseFiles) -> CaseFiles:
    """Rewrite a synthetic case (anisotropic, rotated + flipped affine) with explicit qform 1 / sform 4 codes."""
    out = []
    for src, name in ((case.images[0], "image.nii.gz"), (case.label, "label.nii.gz")):
        img = nib.load(str(src))
        header = img.header.copy()
        header.set_qform(img.affine, code=1)
        header.set_sform(img.affine, code=4)
        header.set_xyzt_units("mm", "sec")
        path = root / name
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header=header), str(path))
        out.append(path)
    return CaseFiles("oblique", (out[0],), out[1])


@pytest.mark.parametrize("dim", [3, 2])
def test_one_hot_round_trip_restores_the_label_and_the_header(tmp_path, synth_task, dim):
    case = _oblique_case(tmp_path, load_dataset(synth_task).training[0])
    plans = tiny_plans(synth_task, dim, patch=[24, 48, 48] if dim == 3 else [48, 48])  # forces padding
    record = preprocess_case(case, plans, tmp_path / "pre", mode="training")
    assert record["status"] == "done", record
    props = read_case_record(tmp_path / "pre", "oblique")
    y = np.load(tmp_path / "pre" / "oblique_y.npy")[0]
    assert any(sum(p) for p in props.pad) and props.resampled_shape != props.original_shape
    one_hot = np.eye(plans.n_classes, dtype=np.float32)[y].transpose(3, 0, 1, 2)  # (K, Z, Y, X)
    probs = restore_probabilities(one_hot, props)
    label_path = write_prediction(tmp_path / "out", case, probs, save_probabilities=True)

    source, written = nib.load(str(case.images[0])), nib.load(str(label_path))
    original = np.asanyarray(nib.load(str(case.label)).dataobj)
    restored = np.asanyarray(written.dataobj)
    assert written.get_data_dtype() == np.uint8 and restored.shape == original.shape == source.shape
    for c in range(1, plans.n_classes):
        a, b = restored == c, original == c
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.95, f"class {c}"
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 4
    assert written.header.get_zooms() == source.header.get_zooms()
    assert written.header.get_xyzt_units() == ("mm", "sec")
    saved = np.load(tmp_path / "out" / "oblique.npz")["probabilities"]
    assert saved.dtype == np.float16 and saved.shape == (plans.n_classes, *original.shape[::-1])


def test_a_failing_case_is_named_and_a_case_is_always_written(tmp_path, synth_task):
    good = load_dataset(synth_task).test[0]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    shape = nib.load(str(good.images[0])).shape[::-1]

    def predict(case):  # everything background
        probs = np.zeros((4, *shape), np.float32)
        probs[0] = 1
        return probs

    out = tmp_path / "out"
    (out / f"{good.case_id}.nii.gz").parent.mkdir()
    (out / f"{good.case_id}.nii.gz").write_bytes(b"stale")  # predict.json, not the file, says what is done
    assert predict_case(predict, good, out, save_probabilities=False)["status"] == "done"
    assert nib.load(str(out / f"{good.case_id}.nii.gz")).shape == shape[::-1]
    record = predict_case(lambda c: (_ for _ in ()).throw(ValueError("boom")), CaseFiles("bad", (broken,)), out,
                          save_probabilities=False)
    assert record["status"] == "failed" and record["error"].startswith("bad: ")
    assert sorted(p.name for p in out.iterdir()) == [f"{good.case_id}.nii.gz"]


def test_input_folders(tmp_path, synth_task):
    assert [c.case_id for c in input_cases(synth_task)] == [c.case_id for c in load_dataset(synth_task).test]
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("b_0001.nii.gz", "b_0000.nii.gz", "a_0000.nii.gz", "a_0001.nii.gz"):
        (bare / name).touch()
    cases = input_cases(bare)
    assert [c.case_id for c in cases] == ["a", "b"] and cases[1].images == (bare / "b_0000.nii.gz",
                                                                             bare / "b_0001.nii.gz")
    (bare / "c.nii").touch()  # a name without a channel suffix: every file is its own case
    assert [c.case_id for c in input_cases(bare)] == ["a_0000", "a_0001", "b_0000", "b_0001", "c"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no NIfTI images"):
        input_cases(tmp_path / "empty")


def test_case_numbers_are_not_taken_for_channel_suffixes(tmp_path):
    """AMOS / WORD name single-channel images amos_0001, amos_0002: numbers, not a case's channels."""
    amos = tmp_path / "amos"
    amos.mkdir()
    for name in ("amos_0001.nii.gz", "amos_0002.nii.gz", "amos_0005.nii.gz"):
        (amos / name).touch()
    assert [c.case_id for c in input_cases(amos)] == ["amos_0001", "amos_0002", "amos_0005"]  # no _0000
    (amos / "amos_0000.nii.gz").touch()  # numbered from 0: only the model's channel count tells
    assert [c.case_id for c in input_cases(amos, channels=1)] == ["amos_0000", "amos_0001", "amos_0002",
                                                                   "amos_0005"]
    v2 = tmp_path / "v2"
    v2.mkdir()
    for name in ("la_003_0000.nii.gz", "la_004_0000.nii.gz"):
        (v2 / name).touch()
    assert [(c.case_id, len(c.images)) for c in input_cases(v2, channels=1)] == [("la_003", 1), ("la_004", 1)]
    (v2 / "la_004_0001.nii.gz").touch()  # la_003 lacks its second channel: that case fails when read, not the folder
    assert [(c.case_id, len(c.images)) for c in input_cases(v2, channels=2)] == [("la_003", 1), ("la_004", 2)]


def test_find_checkpoints_takes_each_runs_best_epoch(tmp_path, plans_3d):
    for fold, best_epoch in ((0, 1), (1, 0)):
        run = tmp_path / "exp" / f"fold{fold}"
        for epoch in (best_epoch, 2):  # Ray keeps the best and the latest
            save_random_checkpoint(run / f"epoch_{epoch:04d}", plans_3d, fold=fold,
                                   progress={"epoch": epoch, "best_epoch": best_epoch})
    save_random_checkpoint(tmp_path / "single", plans_3d)
    found = find_checkpoints([tmp_path / "exp", tmp_path / "single"])
    assert found == [tmp_path / "exp/fold0/epoch_0001", tmp_path / "exp/fold1/epoch_0000", tmp_path / "single"]
    shutil.rmtree(tmp_path / "exp" / "fold1" / "epoch_0000")  # best not kept: the latest stands in
    assert find_checkpoints([tmp_path / "exp" / "fold1"]) == [tmp_path / "exp/fold1/epoch_0002"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="--models: .*empty holds no checkpoint"):
        find_checkpoints([tmp_path / "empty"])
