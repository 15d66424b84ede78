"""Synthetic tasks: MSD layout, determinism, geometry, and labels that are learnable but not trivial."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.cli import main
from nnunet_ray.config import ConfigError, SynthConfig
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.nifti import read_case
from nnunet_ray.data.synth import make_synthetic_task, synth_case


def _cases(root: Path) -> list[tuple]:
    return [read_case(case) for case in load_dataset(root).training]


def test_dataset_json(synth_task: Path) -> None:
    meta = json.loads((synth_task / "dataset.json").read_text())
    assert meta["name"] == "Task99_Synth" and meta["tensorImageSize"] == "3D"
    assert meta["modality"] == {"0": "MRI"}
    assert meta["labels"] == {"0": "background", "1": "organ", "2": "lesion", "3": "spot"}
    assert (meta["numTraining"], meta["numTest"]) == (6, 2)
    assert meta["training"][0] == {"image": "./imagesTr/synth_000.nii.gz", "label": "./labelsTr/synth_000.nii.gz"}
    assert meta["test"] == ["./imagesTs/synth_006.nii.gz", "./imagesTs/synth_007.nii.gz"]
    for entry in meta["training"]:
        assert (synth_task / entry["image"]).is_file() and (synth_task / entry["label"]).is_file()
    assert all((synth_task / path).is_file() for path in meta["test"])


def test_file_types(synth_task: Path) -> None:
    image = nib.load(str(synth_task / "imagesTr" / "synth_000.nii.gz"))
    label = nib.load(str(synth_task / "labelsTr" / "synth_000.nii.gz"))
    assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
    assert image.ndim == 3


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def write(name: str, seed: int) -> dict[str, bytes]:
        root = make_synthetic_task(SynthConfig(out=str(tmp_path / name), cases=2, test=1, size=16, seed=seed))
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.nii.gz"))}

    first, again, other = write("a", 3), write("b", 3), write("c", 4)
    assert first == again and len(first) == 6  # 2 x (image, label) + test image + its labelsTs ground truth
    assert first["labelsTr/synth_000.nii.gz"] != other["labelsTr/synth_000.nii.gz"]


def test_case_independent_of_case_count() -> None:
    small, large = SynthConfig(out="x", cases=2, size=16), SynthConfig(out="x", cases=9, size=16)
    for a, b in zip(synth_case(small, 1), synth_case(large, 1)):
        np.testing.assert_array_equal(a, b)


def test_every_class_present_and_sized(synth_task: Path) -> None:
    for _image, label in _cases(synth_task):
        counts = np.bincount(label.array.ravel(), minlength=4)
        assert counts.size == 4 and (counts > 0).all()
        assert counts[1] > counts[2] and counts[1] > counts[3]  # the organ is the big class


def test_spot_is_a_few_hundred_voxels_at_size_64() -> None:
    cfg = SynthConfig(out="x", size=64)
    spots = [int((synth_case(cfg, i)[1] == 3).sum()) for i in range(3)]
    assert all(100 <= n <= 1000 for n in spots), spots


def test_body_zero_outside_and_croppable(synth_task: Path) -> None:
    for image, label in _cases(synth_task):
        body = image.array[0] > 0
        assert (label.array[0][~body] == 0).all()  # every labelled voxel is inside the nonzero region
        assert (image.array[:, ~body] == 0).all()  # outside the body is exactly 0
        nonzero = np.argwhere(body)
        lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
        assert lo[0] >= 1 and hi[0] <= image.shape[0] - 1  # empty first and last slices
        assert np.prod(hi - lo) < 0.8 * np.prod(image.shape)  # crop-to-nonzero removes a real margin


def test_geometry_anisotropic_rotated_varying(synth_task: Path) -> None:
    shapes, spacings = set(), set()
    for image, label in _cases(synth_task):
        z, y, x = image.spacing
        assert z / x >= 3.0 and y == pytest.approx(x)
        assert image.shape[0] < image.shape[1]  # fewer, thicker slices
        rotation = image.affine[:3, :3] / np.array(image.spacing[::-1])
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-5)  # columns: orthonormal axes
        assert not np.allclose(rotation, np.eye(3))  # rotated and/or flipped, not the identity
        np.testing.assert_allclose(label.affine, image.affine)
        shapes.add(image.shape)
        spacings.add(image.spacing)
    assert len(shapes) > 1 and len(spacings) > 1


def test_intensity_follows_class_with_noise(synth_task: Path) -> None:
    for image, label in _cases(synth_task):
        values, classes = image.array[0], label.array[0]
        body = (classes == 0) & (values > 0)
        means = [values[body].mean()] + [values[classes == k].mean() for k in (1, 2, 3)]
        assert means[3] > means[1] > means[0] > means[2]  # spot > organ > body > lesion (channel 0 contrasts)
        # noisy: organ and body intensities overlap, so one threshold cannot segment the organ
        assert values[classes == 1].min() < values[body].max()


def test_intensity_scale_varies_between_cases(synth_task: Path) -> None:
    organ_means = [image.array[0][label.array[0] == 1].mean() for image, label in _cases(synth_task)]
    assert max(organ_means) / min(organ_means) > 1.3


def test_ct_hounsfield_units(synth_task_ct: Path) -> None:
    meta = json.loads((synth_task_ct / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"}
    for image, label in _cases(synth_task_ct):
        values, classes = image.array[0], label.array[0]
        body = (classes == 0) & (values > 0)
        assert 25 < np.median(values[body]) < 55  # soft tissue ~40 HU
        assert 100 < np.median(values[classes == 1]) < 140
        assert 200 < np.median(values[classes == 3]) < 350  # 300 HU, less at its blurred rim
        assert values.min() == 0.0  # outside the body is 0 (not -1000), so crop-to-nonzero works


def test_multimodal_4d(synth_task_multimodal: Path) -> None:
    meta = json.loads((synth_task_multimodal / "dataset.json").read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1w"} and meta["tensorImageSize"] == "4D"
    raw = nib.load(str(synth_task_multimodal / "imagesTr" / "synth_000.nii.gz"))
    image, label = read_case(load_dataset(synth_task_multimodal).training[0])
    assert raw.ndim == 4 and raw.shape[3] == 2
    assert image.array.shape == (2, *label.shape) and raw.shape[:3] == label.shape[::-1]
    organ = label.array[0] == 1
    body = (label.array[0] == 0) & (image.array[0] > 0)
    # channel contrasts differ: organ brighter than body in channel 0, darker in channel 1
    assert image.array[0][organ].mean() > image.array[0][body].mean()
    assert image.array[1][organ].mean() < image.array[1][body].mean()


def test_no_test_cases(tmp_path: Path) -> None:
    root = make_synthetic_task(SynthConfig(out=str(tmp_path / "T"), cases=2, test=0, size=16))
    assert (root / "imagesTs").is_dir() and not any((root / "imagesTs").iterdir())
    assert load_dataset(root).test == ()


def test_ten_cases_of_64_are_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    make_synthetic_task(SynthConfig(out=str(tmp_path / "T"), cases=10, test=0, size=64))
    assert time.perf_counter() - start < 20  # about 0.5 s on one core; generous for a loaded CI machine


@pytest.mark.parametrize("change, flag", [({"cases": 1}, "--cases"), ({"out": ""}, "--out"), ({"size": 8}, "--size")])
def test_invalid_config(tmp_path: Path, change: dict, flag: str) -> None:
    cfg = SynthConfig(**{"out": str(tmp_path / "T"), **change})
    with pytest.raises(ConfigError, match=flag):
        make_synthetic_task(cfg)


def test_test_cases_ground_truth_goes_to_labels_ts(synth_task):
    for case_id in ("synth_006", "synth_007"):
        image = nib.load(str(synth_task / "imagesTs" / f"{case_id}.nii.gz"))
        label = nib.load(str(synth_task / "labelsTs" / f"{case_id}.nii.gz"))
        assert label.shape == image.shape and np.allclose(label.affine, image.affine)
        assert set(np.unique(np.asanyarray(label.dataobj))) == {0, 1, 2, 3}


@pytest.mark.parametrize("existing, problem", [
    ("dataset", r"is not empty \(5 entries: dataset.json, imagesTr, imagesTs, \.\.\.\)"),
    ("file", "exists and is not a folder"),
])
def test_out_that_exists_is_refused_in_one_line_and_left_alone(tmp_path: Path, capsys, existing: str,
                                                               problem: str) -> None:
    out = tmp_path / "T"
    if existing == "dataset":
        make_synthetic_task(SynthConfig(out=str(out), cases=2, test=1, size=16))
    else:
        out.write_text("notes")
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert main(["synth", "--out", str(out), "--cases", "3", "--size", "16", "--seed", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.match(rf"nnunet-ray synth: error: --out: {re.escape(str(out))} {problem}", err[0])
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_an_empty_out_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "T").mkdir()
    assert load_dataset(make_synthetic_task(SynthConfig(out=str(tmp_path / "T"), cases=2, test=0, size=16))).training
