"""A preprocessed case remembers its raw files: a changed file is reprocessed, a merely copied or touched one is not."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_ray.data.nifti import write_nifti
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.preprocessing import raw_files as raw_files_module
from nnunet_ray.preprocessing.case import preprocess_case
from nnunet_ray.preprocessing.raw_files import (
    CHANGED,
    UNCHANGED,
    UNRECORDED,
    check_raw_files,
    raw_file_records,
)
from tests.conftest import make_test_plans

PLANS = make_test_plans(spacing=[1.0, 1.0, 1.0], patch_size=[8, 8, 8], n_classes=3)


def _label(value: int = 1) -> np.ndarray:
    label = np.zeros((10, 12, 12), np.uint8)
    label[3:7, 4:8, 4:8] = value
    return label


def _write_case(folder: Path, label: np.ndarray, *, suffix: str = ".nii.gz") -> CaseFiles:
    """A 1 mm (Z, Y, X) = (10, 12, 12) case: an image, and ``label`` (``suffix`` ".nii" writes it uncompressed)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = np.zeros((10, 12, 12), np.float32)
    image[1:9, 2:10, 2:10] = np.linspace(1, 100, 8 * 8 * 8).reshape(8, 8, 8)
    write_nifti(image, np.eye(4), folder / "case_001.nii.gz", dtype=np.float32)
    write_nifti(label, np.eye(4), folder / f"case_001_seg{suffix}", dtype=np.uint8)
    return CaseFiles("case_001", (folder / "case_001.nii.gz",), folder / f"case_001_seg{suffix}")


def _recorded(out: Path) -> list[dict]:
    return json.loads((out / "case_001.json").read_text())["raw_files"]


def _shift_mtime(path: Path, seconds: int = 3600) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


def test_record_names_each_file_by_role_with_size_time_and_hash(tmp_path):
    case = _write_case(tmp_path / "raw", _label())
    records = raw_file_records(case)
    assert [(r["role"], r["name"]) for r in records] == [("image0", "case_001.nii.gz"),
                                                         ("label", "case_001_seg.nii.gz")]
    label = case.label.stat()
    assert records[1]["size"] == label.st_size and records[1]["mtime_ns"] == label.st_mtime_ns
    assert len(records[1]["sha256"]) == 64 and records[0]["sha256"] != records[1]["sha256"]


@pytest.mark.parametrize("change, state", [
    ("nothing", UNCHANGED),
    ("touched", UNCHANGED),  # a new time, the same bytes: hashed once, the record takes the new time
    ("rewritten", CHANGED),  # another size
    ("label_renamed", CHANGED),  # dataset.json points at another file
    ("deleted", CHANGED),
])
def test_check_raw_files(tmp_path, change, state):
    case = _write_case(tmp_path, _label())
    recorded = raw_file_records(case)
    if change == "touched":
        _shift_mtime(case.label)
    elif change == "rewritten":
        write_nifti(np.ones((10, 12, 12), np.uint8), np.eye(4), case.label, dtype=np.uint8)
    elif change == "label_renamed":
        case = CaseFiles(case.case_id, case.images, case.label.rename(tmp_path / "other_seg.nii.gz"))
    elif change == "deleted":
        case.label.unlink()
    found, refreshed = check_raw_files(recorded, case)
    assert found == state
    assert (refreshed is not None) == (change == "touched")
    if refreshed is not None:
        assert refreshed[1]["mtime_ns"] == case.label.stat().st_mtime_ns
        assert check_raw_files(refreshed, case) == (UNCHANGED, None)


def test_nothing_recorded_is_its_own_state(tmp_path):
    assert check_raw_files(None, _write_case(tmp_path, _label())) == (UNRECORDED, None)


def test_changed_label_is_reprocessed_and_reported_as_such(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "pre"
    case = _write_case(raw, _label(1))
    assert preprocess_case(case, PLANS, out)["status"] == "done"
    assert preprocess_case(case, PLANS, out)["status"] == "skipped"
    assert set(np.unique(np.load(out / "case_001_y.npy"))) == {0, 1}
    _write_case(raw, _label(2))  # the corrected label: class 2 where class 1 was
    assert preprocess_case(case, PLANS, out)["status"] == "reprocessed"
    assert set(np.unique(np.load(out / "case_001_y.npy"))) == {0, 2}
    assert _recorded(out) == raw_file_records(case)
    assert preprocess_case(case, PLANS, out)["status"] == "skipped"


def test_same_size_new_content_is_caught_by_the_hash(tmp_path):
    # An uncompressed label keeps its size whatever the classes: only the content hash can tell.
    raw, out = tmp_path / "raw", tmp_path / "pre"
    case = _write_case(raw, _label(1), suffix=".nii")
    preprocess_case(case, PLANS, out)
    size = case.label.stat().st_size
    _write_case(raw, _label(2), suffix=".nii")
    assert case.label.stat().st_size == size
    _shift_mtime(case.label)  # a coarse-clock filesystem could even keep the time; here it moved
    assert preprocess_case(case, PLANS, out)["status"] == "reprocessed"


def test_a_copied_dataset_is_not_redone_and_the_next_check_reads_nothing(tmp_path, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "pre"
    preprocess_case(_write_case(raw, _label()), PLANS, out)
    arrays_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    copy = tmp_path / "copy"
    shutil.copytree(raw, copy, copy_function=shutil.copy)  # like `cp -r`: new modification times
    for path in copy.iterdir():
        _shift_mtime(path)
    moved = CaseFiles("case_001", (copy / "case_001.nii.gz",), copy / "case_001_seg.nii.gz")
    assert preprocess_case(moved, PLANS, out)["status"] == "skipped"
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")} == arrays_before
    assert [r["mtime_ns"] for r in _recorded(out)] == [p.stat().st_mtime_ns for p in (*moved.images, moved.label)]

    def no_reading(path):
        raise AssertionError(f"{path} was read: size and time match, a stat should do")

    monkeypatch.setattr(raw_files_module, "_digest", no_reading)
    assert preprocess_case(moved, PLANS, out)["status"] == "skipped"


def test_cases_written_before_the_record_existed_still_count_as_done(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "pre"
    case = _write_case(raw, _label())
    preprocess_case(case, PLANS, out)
    props = json.loads((out / "case_001.json").read_text())
    del props["raw_files"]
    (out / "case_001.json").write_text(json.dumps(props))
    assert preprocess_case(case, PLANS, out)["status"] == "skipped"


def test_a_deleted_raw_file_fails_the_case_naming_the_file(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "pre"
    case = _write_case(raw, _label())
    preprocess_case(case, PLANS, out)
    case.label.unlink()
    record = preprocess_case(case, PLANS, out)
    assert record["status"] == "failed" and "case_001_seg.nii.gz" in record["error"]
    assert "\n" not in record["error"] and not list(out.glob("case_001*"))  # no stale arrays left to train on


def test_on_a_uri_root_the_case_there_decides_and_its_record_is_refreshed_there(tmp_path, s3_root):
    """The upload path (``preprocessing.writer``): cases are written to local scratch, whether they are done is read
    from the results root on object storage, and a moved time is recorded back there."""
    from nnunet_ray.data import storage

    raw, local = tmp_path / "raw", tmp_path / "pre"
    case = _write_case(raw, _label(1))
    preprocess_case(case, PLANS, local)
    for path in local.iterdir():
        storage.upload(path, storage.join(s3_root, path.name))
    scratch = tmp_path / "scratch"
    assert preprocess_case(case, PLANS, scratch, done_in=s3_root)["status"] == "skipped"
    _shift_mtime(case.label)
    assert preprocess_case(case, PLANS, scratch, done_in=s3_root)["status"] == "skipped"
    remote = json.loads(storage.read_text(storage.join(s3_root, "case_001.json")))["raw_files"]
    assert remote[1]["mtime_ns"] == case.label.stat().st_mtime_ns
    _write_case(raw, _label(2))
    assert preprocess_case(case, PLANS, scratch, done_in=s3_root)["status"] == "reprocessed"
    assert set(np.unique(np.load(scratch / "case_001_y.npy"))) == {0, 2}  # written to scratch, for the upload
