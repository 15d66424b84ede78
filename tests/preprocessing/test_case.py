"""preprocess_case end to end on synthetic cases: files, properties, padding, skip/redo, failures."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnunet_ray.data import atomic as atomic_module
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.nifti import read_case, write_nifti
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.planning.fingerprint import case_fingerprint, merge_fingerprints
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import Normalization
from nnunet_ray.preprocessing.case import foreground_samples, pad_widths, preprocess_case, target_spacing
from nnunet_ray.preprocessing.inverse import restore_prediction
from nnunet_ray.preprocessing.record import read_case_record
from tests.conftest import make_test_plans

JSON_KEYS = {"case_id", "plans_hash", "mode", "original_shape", "original_spacing", "affine", "crop_box",
             "target_spacing", "anisotropic_axis", "resampled_shape", "pad", "shape", "foreground", "raw_files",
             "version"}


@pytest.fixture(scope="module")
def dataset(synth_task):
    return load_dataset(synth_task)


@pytest.fixture(scope="module")
def plans(dataset):
    """3D plans with a patch larger than the cases, so training mode must pad every axis."""
    fingerprint = merge_fingerprints(dataset, [case_fingerprint(c) for c in dataset.training])
    return {
        3: dataclasses.replace(make_plans(dataset, fingerprint, dim=3), patch_size=[16, 40, 40]),
        2: dataclasses.replace(make_plans(dataset, fingerprint, dim=2), patch_size=[40, 40]),
    }


def _case_files(out_dir: Path, case_id: str) -> list[str]:
    """The case's files in ``out_dir``, temporaries (``.tmp.<pid>.<random>.<final name>``) included."""
    def final_name(name: str) -> str:
        return name.split(".", 4)[-1] if name.startswith(".tmp.") else name

    return sorted(p.name for p in out_dir.iterdir() if final_name(p.name).startswith(case_id))


def _write_case(folder: Path, case_id: str, image: np.ndarray, label: np.ndarray | None) -> CaseFiles:
    """Write a (Z, Y, X) image and label as NIfTI with a 1 x 1 x 3 mm affine."""
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    write_nifti(image, affine, folder / f"{case_id}.nii.gz", dtype=np.float32)
    if label is None:
        return CaseFiles(case_id, (folder / f"{case_id}.nii.gz",))
    write_nifti(label, affine, folder / f"{case_id}_seg.nii.gz", dtype=np.uint8)
    return CaseFiles(case_id, (folder / f"{case_id}.nii.gz",), folder / f"{case_id}_seg.nii.gz")


# ---- helpers, hand-checked ----

@pytest.mark.parametrize(
    "shape, patch, expected",
    [
        ((5, 10, 20), [8, 10, 16], [[1, 2], [0, 0], [0, 0]]),  # 3 missing: floor before, ceil after
        ((5, 10, 20), [13, 13], [[0, 0], [1, 2], [0, 0]]),  # 2D: Z is never padded
        ((9, 9, 9), [4, 4, 4], [[0, 0]] * 3),  # never crops
    ],
)
def test_pad_widths(shape, patch, expected):
    assert pad_widths(shape, patch) == expected


def test_target_spacing_keeps_case_z_in_2d():
    assert target_spacing(make_test_plans(dim=3, spacing=[3.0, 1.0, 0.5]), (5.0, 0.7, 0.7)) == (3.0, 1.0, 0.5)
    assert target_spacing(make_test_plans(dim=2, spacing=[3.0, 1.0, 0.5]), (5.0, 0.7, 0.7)) == (5.0, 1.0, 0.5)


def test_foreground_samples_capped_seeded_and_on_class():
    label = np.zeros((1, 20, 20, 20), np.uint8)
    label[0, :, :, :10] = 1  # 4000 voxels: capped at 1000
    label[0, 3, 4, 15] = 2
    first = foreground_samples(label, 4, seed=7)
    assert first == foreground_samples(label, 4, seed=7)
    assert len(first["1"]) == 1000 and len({tuple(c) for c in first["1"]}) == 1000
    assert all(label[0, z, y, x] == 1 for z, y, x in first["1"])
    assert first["2"] == [[3, 4, 15]] and first["3"] == []


# ---- end to end ----

def test_training_case_end_to_end(dataset, plans, tmp_path):
    case, plan = dataset.training[0], plans[3]
    record = preprocess_case(case, plan, tmp_path)
    assert record["status"] == "done" and record["error"] is None and record["seconds"] > 0
    assert _case_files(tmp_path, case.case_id) == [f"{case.case_id}.json", f"{case.case_id}_x.npy",
                                                   f"{case.case_id}_y.npy"]
    props = json.loads((tmp_path / f"{case.case_id}.json").read_text())
    assert set(props) == JSON_KEYS and props["plans_hash"] == plan.preprocessing_hash and props["mode"] == "training"
    assert props["target_spacing"] == pytest.approx(plan.spacing)  # 3D: the plans' spacing, stored as used
    x, y = np.load(tmp_path / f"{case.case_id}_x.npy"), np.load(tmp_path / f"{case.case_id}_y.npy")
    assert x.dtype == np.float32 and y.dtype == np.uint8
    assert x.shape == (1, *props["shape"]) and y.shape == (1, *props["shape"])
    assert all(s >= p for s, p in zip(props["shape"], plan.patch_size))
    assert props["shape"] == [r + a + b for r, (a, b) in zip(props["resampled_shape"], props["pad"])]
    image, label = read_case(case)
    assert props["original_shape"] == list(image.shape)
    assert np.allclose(props["affine"], image.affine)
    assert all(0 <= a < b <= n for (a, b), n in zip(props["crop_box"], image.shape))
    assert set(props["foreground"]) == {"1", "2", "3"}
    for cls, coords in props["foreground"].items():
        assert coords and all(y[0, z, yy, xx] == int(cls) for z, yy, xx in coords)
    (z0, z1), (y0, y1), (x0, x1) = props["pad"]
    inside = x[0, z0 : x.shape[1] - z1, y0 : x.shape[2] - y1, x0 : x.shape[3] - x1]
    body = inside[inside != 0]
    assert abs(body.mean()) < 0.05 and abs(body.std() - 1) < 0.05  # MRI z-score over nonzero voxels
    assert x[0, :z0].max(initial=0) == 0 and y[0, :z0].max(initial=0) == 0  # zero padding


def test_restore_prediction_from_written_case(dataset, plans, tmp_path):
    case = dataset.training[1]
    preprocess_case(case, plans[3], tmp_path)
    props = read_case_record(tmp_path, case.case_id)
    y = np.load(tmp_path / f"{case.case_id}_y.npy")
    probs = np.eye(4, dtype=np.float32)[y[0]].transpose(3, 0, 1, 2)  # the label as one-hot probabilities
    restored = restore_prediction(probs, props)
    original = read_case(case)[1].array[0]
    for c in (1, 2):  # class 3 is a few-voxel spot at size 32, too small for a resampling round trip
        a, b = restored == c, original == c
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.95


def test_2d_resamples_and_pads_in_plane_only(dataset, plans, tmp_path):
    case, plan = dataset.training[0], plans[2]
    assert preprocess_case(case, plan, tmp_path)["status"] == "done"
    props = json.loads((tmp_path / f"{case.case_id}.json").read_text())
    (z0, z1), _, _ = props["crop_box"]
    assert props["resampled_shape"][0] == z1 - z0  # z keeps the case's own spacing
    assert props["pad"][0] == [0, 0]
    assert min(props["shape"][1:]) >= 40


def test_val_mode_writes_label_without_padding(dataset, plans, tmp_path):
    case = dataset.training[0]
    assert preprocess_case(case, plans[3], tmp_path, mode="val")["status"] == "done"
    props = json.loads((tmp_path / f"{case.case_id}.json").read_text())
    assert props["pad"] == [[0, 0]] * 3 and props["shape"] == props["resampled_shape"]
    assert np.load(tmp_path / f"{case.case_id}_y.npy").shape == (1, *props["shape"])


def test_test_mode_has_no_label(dataset, plans, tmp_path):
    case = dataset.test[0]
    assert preprocess_case(case, plans[3], tmp_path, mode="test")["status"] == "done"
    assert _case_files(tmp_path, case.case_id) == [f"{case.case_id}.json", f"{case.case_id}_x.npy"]
    props = json.loads((tmp_path / f"{case.case_id}.json").read_text())
    assert props["foreground"] == {} and props["pad"] == [[0, 0]] * 3


def test_ct_case_is_clipped_and_scaled(synth_task_ct, tmp_path):
    dataset = load_dataset(synth_task_ct)
    fingerprint = merge_fingerprints(dataset, [case_fingerprint(c) for c in dataset.training])
    plan = make_plans(dataset, fingerprint, dim=3)
    norm = dataclasses.asdict(plan.normalization)
    assert preprocess_case(dataset.training[0], plan, tmp_path, mode="val")["status"] == "done"
    x = np.load(tmp_path / f"{dataset.training[0].case_id}_x.npy")
    lo, hi = [(norm[k] - norm["ct_mean"]) / norm["ct_std"] for k in ("ct_min", "ct_max")]
    assert x.min() >= lo - 1e-4 and x.max() <= hi + 1e-4


def test_multichannel_case(synth_task_multimodal, tmp_path):
    dataset = load_dataset(synth_task_multimodal)
    fingerprint = merge_fingerprints(dataset, [case_fingerprint(c) for c in dataset.training])
    plan = make_plans(dataset, fingerprint, dim=3)
    assert preprocess_case(dataset.training[0], plan, tmp_path)["status"] == "done"
    assert np.load(tmp_path / f"{dataset.training[0].case_id}_x.npy").shape[0] == 2


# ---- rerun: skip, redo ----

def test_rerun_skips(dataset, plans, tmp_path):
    case = dataset.training[0]
    preprocess_case(case, plans[3], tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert preprocess_case(case, plans[3], tmp_path)["status"] == "skipped"
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_network_only_plans_change_keeps_cases_done(dataset, plans, tmp_path):
    case = dataset.training[0]
    preprocess_case(case, plans[3], tmp_path)
    wider = dataclasses.replace(plans[3], filters=[2 * f for f in plans[3].filters], labels={"0": "bg"})
    assert preprocess_case(case, wider, tmp_path)["status"] == "skipped"


def test_stale_hash_is_redone(dataset, plans, tmp_path):
    case = dataset.training[0]
    preprocess_case(case, plans[3], tmp_path)
    other = dataclasses.replace(plans[3], patch_size=[8, 24, 24])
    assert preprocess_case(case, other, tmp_path)["status"] == "done"
    props = json.loads((tmp_path / f"{case.case_id}.json").read_text())
    assert props["plans_hash"] == other.preprocessing_hash
    assert np.load(tmp_path / f"{case.case_id}_x.npy").shape[1:] == tuple(props["shape"])


@pytest.mark.parametrize("missing", ["{}.json", "{}_y.npy"])
def test_half_written_case_is_redone(dataset, plans, tmp_path, missing):
    case = dataset.training[0]
    preprocess_case(case, plans[3], tmp_path)
    (tmp_path / missing.format(case.case_id)).unlink()
    (tmp_path / f".tmp.4242.0badc0de.{case.case_id}.json").write_text("{")  # a run killed while writing
    assert preprocess_case(case, plans[3], tmp_path)["status"] == "done"
    assert _case_files(tmp_path, case.case_id) == [f"{case.case_id}.json", f"{case.case_id}_x.npy",
                                                   f"{case.case_id}_y.npy"]


# ---- failures: named, nothing partial left ----

def _volume(value: float = 100.0) -> np.ndarray:
    image = np.zeros((6, 20, 20), np.float32)
    image[1:5, 3:17, 3:17] = value
    return image


@pytest.mark.parametrize(
    "image, label, problem",
    [
        (np.zeros((6, 20, 20), np.float32), np.zeros((6, 20, 20), np.uint8), "no nonzero voxel"),
        (_volume(), np.full((6, 20, 20), 7, np.uint8), "label has class 7"),
        (_volume(np.nan), np.zeros((6, 20, 20), np.uint8), "NaN"),  # read_case rejects non-finite voxels
        (_volume(), np.zeros((6, 20, 21), np.uint8), "shape"),
    ],
)
def test_bad_case_fails_with_its_name(plans, tmp_path, image, label, problem):
    case = _write_case(tmp_path, "bad_001", image, label)
    out = tmp_path / "out"
    record = preprocess_case(case, plans[3], out)
    assert record["status"] == "failed" and record["case_id"] == "bad_001"
    assert record["error"].startswith("bad_001: ") and problem in record["error"]
    assert not out.exists() or _case_files(out, "bad_001") == []


def test_missing_file_and_missing_label_fail(plans, tmp_path):
    missing = CaseFiles("gone_001", (tmp_path / "gone_001.nii.gz",), tmp_path / "gone_001_seg.nii.gz")
    assert preprocess_case(missing, plans[3], tmp_path)["error"].startswith("gone_001: ")
    unlabelled = _write_case(tmp_path, "nolabel_001", _volume(), None)
    record = preprocess_case(unlabelled, plans[3], tmp_path / "out")
    assert record["status"] == "failed" and "needs a label" in record["error"]


def test_channel_mismatch_fails(dataset, plans, tmp_path):
    record = preprocess_case(dataset.training[0], dataclasses.replace(plans[3], in_channels=2), tmp_path)
    assert record["status"] == "failed" and "channels" in record["error"]


def test_failure_removes_old_outputs_and_temp_files(dataset, plans, tmp_path):
    good, other = dataset.training[0], dataset.training[1]
    preprocess_case(good, plans[3], tmp_path)
    preprocess_case(other, plans[3], tmp_path)
    (tmp_path / f".tmp.999.0badc0de.{good.case_id}_x.npy").write_bytes(b"left by a crashed run")
    broken = CaseFiles(good.case_id, good.images, tmp_path / "no_such_label.nii.gz")
    record = preprocess_case(broken, dataclasses.replace(plans[3], patch_size=[8, 24, 24]), tmp_path)
    assert record["status"] == "failed" and record["error"].startswith(f"{good.case_id}: ")
    assert _case_files(tmp_path, good.case_id) == []
    assert len(_case_files(tmp_path, other.case_id)) == 3  # other cases untouched


def test_write_error_leaves_nothing_partial(dataset, plans, tmp_path, monkeypatch):
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_module.os, "replace", failing_replace)
    case = dataset.training[0]
    record = preprocess_case(case, plans[3], tmp_path)
    assert record == {**record, "status": "failed", "error": f"{case.case_id}: OSError: disk full"}
    assert _case_files(tmp_path, case.case_id) == []


def test_unknown_mode_is_a_caller_error(dataset, plans, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        preprocess_case(dataset.training[0], plans[3], tmp_path, mode="predict")


def test_mri_background_stays_zero_and_statistics_ignore_it_after_resampling(synth_task, tmp_path):
    """Resampling must not turn the zero background into 'nonzero' voxels that enter the MRI z-score."""
    case = load_dataset(synth_task).training[0]
    image, _ = read_case(case)
    spacing = [s * 0.8 for s in image.spacing]  # forces a real (cubic) resample of every axis
    plans = make_test_plans(spacing=spacing, patch_size=[8, 8, 8], n_classes=4, normalization=Normalization(("mri",)))
    assert preprocess_case(case, plans, tmp_path, mode="val")["status"] == "done"
    x = np.load(tmp_path / f"{case.case_id}_x.npy")[0]
    body = x != 0
    assert 0.05 < 1 - body.mean() < 0.95, "background should stay exactly zero"
    assert abs(float(x[body].mean())) < 1e-3 and abs(float(x[body].std()) - 1) < 1e-3


def test_mri_zscore_uses_each_channels_own_nonzero_mask(tmp_path):
    # Channel 0 fills the body; channel 1 (another MR sequence) is nonzero in half of it. A shared union mask
    # would count channel 1's zeros inside the body: mean 3.75 instead of 7.5 over its own voxels {5, 10}.
    image = np.zeros((2, 6, 8, 8), np.float32)
    image[0, 1:5, 2:6, 2:6] = np.arange(1, 65).reshape(4, 4, 4)
    image[1, 1:5, 2:6, 2:4] = np.tile([5.0, 10.0], 16).reshape(4, 4, 2)
    label = np.zeros((6, 8, 8), np.uint8)
    label[2:4, 3:5, 3:5] = 1
    case = _write_case(tmp_path, "two_mr", image, label)
    plans = make_test_plans(spacing=[3.0, 1.0, 1.0], patch_size=[4, 4, 4], in_channels=2, n_classes=2,
                            normalization=Normalization(("mri", "mri")))
    assert preprocess_case(case, plans, tmp_path / "out", mode="val")["status"] == "done"
    x = np.load(tmp_path / "out" / "two_mr_x.npy")
    own = x[1][x[1] != 0]
    assert own.size == 32 and sorted(set(np.round(own, 6))) == [-1.0, 1.0]  # (5 - 7.5) / 2.5, (10 - 7.5) / 2.5
    assert (x[1] == 0).sum() == x[1].size - 32  # channel 1's zeros inside channel 0's body stay 0
