"""Per-case fingerprints from tiny real NIfTI files, and merging them into fingerprint.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.data.records import RecordError
from nnunet_ray.data.types import CaseFiles, DatasetError, DatasetInfo
from nnunet_ray.planning.fingerprint import (
    FINGERPRINT_FILE,
    case_fingerprint,
    cropped_shape,
    load_fingerprint,
    merge_fingerprints,
    save_fingerprint,
)
from nnunet_ray.planning.plans import make_plans

SPACING = (3.0, 0.5, 0.7)  # (z, y, x) mm


def write(path: Path, zyx: np.ndarray, spacing: tuple = SPACING, dtype: type = np.float32) -> Path:
    """Write a (Z, Y, X) array as NIfTI (x, y, z) with voxel sizes from ``spacing`` (z, y, x)."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0).astype(dtype), affine), path)
    return path


def make_case(folder: Path, case_id: str, *, channels: int = 1) -> tuple[CaseFiles, np.ndarray, np.ndarray]:
    """Image: zeros except a box [1:5, 2:7, 3:9] of distinct values; label: 20 voxels of classes 1 and 2."""
    image = np.zeros((6, 8, 10), np.float32)
    image[1:5, 2:7, 3:9] = np.arange(1, 4 * 5 * 6 + 1).reshape(4, 5, 6)
    label = np.zeros((6, 8, 10), np.uint8)
    label[2:4, 3:5, 4:7] = 1  # 12 voxels
    label[3, 5, 4:8] = 2  # 4 voxels
    label[4, 6, 5:9] = 2  # 4 more: 20 foreground voxels
    paths = tuple(write(folder / f"{case_id}_{c:04d}.nii.gz", image * (c + 1)) for c in range(channels))
    label_path = write(folder / f"{case_id}.nii.gz", label, dtype=np.uint8)
    return CaseFiles(case_id, paths, label_path), image, label


def test_case_fingerprint_values(tmp_path: Path) -> None:
    case, image, label = make_case(tmp_path, "case_a")
    record = case_fingerprint(case)
    assert record["error"] is None and record["case_id"] == "case_a"
    assert record["spacing"] == pytest.approx(list(SPACING))
    assert record["shape"] == [6, 8, 10] and record["cropped_shape"] == [4, 5, 6]
    assert record["intensity_samples"] == [image[label > 0].tolist()]


def test_samples_are_capped_and_deterministic(tmp_path: Path) -> None:
    case, image, label = make_case(tmp_path, "case_a", channels=2)
    first = case_fingerprint(case, max_samples=5, seed=3)["intensity_samples"]
    assert first == case_fingerprint(case, max_samples=5, seed=3)["intensity_samples"]
    assert len(first) == 2 and len(first[0]) == len(first[1]) == 5
    assert set(first[0]) <= set(image[label > 0].tolist())
    assert first[1] == [2 * v for v in first[0]]  # the same voxels in every channel
    others = [case_fingerprint(case, max_samples=5, seed=s)["intensity_samples"][0] for s in range(4, 8)]
    assert any(o != first[0] for o in others)


def test_bad_cases_return_errors_not_raise(tmp_path: Path) -> None:
    case, _, _ = make_case(tmp_path, "case_a")
    missing = CaseFiles("case_m", (tmp_path / "nope.nii.gz",), case.label)
    record = case_fingerprint(missing)
    assert record["case_id"] == "case_m" and record["error"].startswith("case_m") and "missing" in record["error"]
    unlabelled = case_fingerprint(CaseFiles("case_u", case.images, None))
    assert unlabelled["error"].startswith("case_u") and "label" in unlabelled["error"]
    wrong = write(tmp_path / "wrong.nii.gz", np.zeros((6, 8, 9)), dtype=np.uint8)
    mismatch = case_fingerprint(CaseFiles("case_s", case.images, wrong))
    assert mismatch["error"].startswith("case_s") and "shape" in mismatch["error"]


def test_max_samples_must_be_positive(tmp_path: Path) -> None:
    case, _, _ = make_case(tmp_path, "case_a")
    with pytest.raises(ValueError, match="max_samples"):
        case_fingerprint(case, max_samples=0)


def test_cropped_shape() -> None:
    image = np.zeros((2, 4, 5, 6))
    image[1, 1, 2:4, 5] = -3.0  # negative values count as nonzero (CT air)
    assert cropped_shape(image) == [1, 2, 1]
    assert cropped_shape(np.zeros((1, 3, 4, 5))) == [3, 4, 5]  # empty: preprocessing reports the case


def dataset(modalities: tuple[str, ...] = ("MRI",)) -> DatasetInfo:
    return DatasetInfo("Dataset007_Fp", Path("/nowhere"), modalities, {0: "background", 1: "fg"}, ())


def record(case_id: str, spacing: list, cropped: list, samples: list) -> dict:
    return {"case_id": case_id, "spacing": spacing, "shape": [2 * c for c in cropped], "cropped_shape": cropped,
            "intensity_samples": samples, "error": None}


def test_merge_hand_checked() -> None:
    records = [
        record("b", [1.0, 0.5, 0.5], [10, 20, 30], [[4.0, 5.0]]),
        {"case_id": "c", "error": "c: cannot read image"},
        record("a", [3.0, 0.7, 0.7], [20, 40, 50], [[1.0, 2.0, 3.0]]),
        record("d", [2.0, 0.6, 0.9], [30, 30, 40], [[], []]),  # two channels for a one-channel dataset
    ]
    merged = merge_fingerprints(dataset(), records).to_json()  # fingerprint.json's content
    assert merged["case_ids"] == ["a", "b"] and merged["n_cases"] == 2 and merged["version"] == 1
    assert merged["spacings"] == [[3.0, 0.7, 0.7], [1.0, 0.5, 0.5]]
    assert merged["median_spacing"] == pytest.approx([2.0, 0.6, 0.6])
    assert merged["median_cropped_shape"] == pytest.approx([15, 30, 40])
    assert merged["median_shape"] == pytest.approx([30, 60, 80])
    stats = merged["intensity"][0]  # pooled 1..5
    assert stats["n_samples"] == 5 and stats["mean"] == pytest.approx(3.0)
    assert stats["std"] == pytest.approx(math.sqrt(2.0))
    assert stats["percentile_00_5"] == pytest.approx(1.02) and stats["percentile_99_5"] == pytest.approx(4.98)
    assert [f["case_id"] for f in merged["failed"]] == ["c", "d"]
    assert "2 image channels" in merged["failed"][1]["error"]


def test_merge_without_usable_case_raises() -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        merge_fingerprints(dataset(), [{"case_id": "c", "error": "c: cannot read image"}])
    with pytest.raises(DatasetError, match="no usable"):
        merge_fingerprints(dataset(), [])


def test_merge_channel_without_foreground_has_null_stats() -> None:
    merged = merge_fingerprints(dataset(), [record("a", [1.0, 1.0, 1.0], [8, 8, 8], [[]])])
    assert merged.intensity[0]["n_samples"] == 0 and merged.intensity[0]["mean"] is None


def test_the_file_round_trips_and_a_damaged_one_names_itself(tmp_path) -> None:
    merged = merge_fingerprints(dataset(), [record("b", [1.0, 0.5, 0.5], [10, 20, 30], [[4.0, 5.0]]),
                                            record("a", [3.0, 0.7, 0.7], [20, 40, 50], [[1.0, 2.0, 3.0]])])
    save_fingerprint(tmp_path, merged)
    assert load_fingerprint(tmp_path) == merged and merged.median_spacing == pytest.approx([2.0, 0.6, 0.6])
    older = {k: v for k, v in merged.to_json().items() if k != "version"}  # from before the version key
    (tmp_path / FINGERPRINT_FILE).write_text(json.dumps(older))
    assert load_fingerprint(tmp_path) == merged
    damaged = [("{", "not JSON"), ('{"version": 2}', "version 2 is newer"),
               ('{"dataset": "x", "spacings": [[1, 1]], "cropped_shapes": []}', "not a dataset fingerprint")]
    for text, problem in damaged:
        (tmp_path / FINGERPRINT_FILE).write_text(text)
        with pytest.raises(RecordError, match=rf"^{tmp_path / FINGERPRINT_FILE}: {problem}"):
            load_fingerprint(tmp_path)


def test_files_to_plans(tmp_path: Path) -> None:
    ds = dataset(("CT",))
    records = [case_fingerprint(make_case(tmp_path, cid)[0]) for cid in ("x1", "x2")]
    merged = merge_fingerprints(ds, records)
    plans = make_plans(ds, merged, dim=3)
    _, image, label = make_case(tmp_path, "ref")
    foreground = np.concatenate([image[label > 0]] * 2)  # both cases pooled
    assert plans.normalization.ct_mean == pytest.approx(float(foreground.mean()))
    assert plans.normalization.ct_max == pytest.approx(float(np.percentile(foreground, 99.5)))
    assert plans.anisotropic_axis == 0 and plans.preset == "auto"
    # cropped (4, 5, 6) at (3, 0.5, 0.7) mm; target: z tightened to max(10th pct 3.0, 0.7) = 3.0
    assert plans.spacing == pytest.approx([3.0, 0.5, 0.7]) and plans.patch_size == (8, 8, 8)
