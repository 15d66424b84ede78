"""Preprocessing into an s3:// results root (a real S3-compatible server on 127.0.0.1): every output lands there."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_ray import cli
from nnunet_ray.config import PreprocessConfig
from nnunet_ray.data import storage
from nnunet_ray.data.credentials import ACCESS_KEY, FORWARD_ENV, SECRET_KEY, SESSION_TOKEN
from nnunet_ray.data.folds import kfold_splits, load_splits
from nnunet_ray.data.nifti import write_nifti
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.distributed.case_pool import case_memory_bytes, raw_case_memory_bytes
from nnunet_ray.distributed.preprocess import preprocess_dataset
from nnunet_ray.planning.fingerprint import DatasetFingerprint
from nnunet_ray.planning.schema import load_plans
from tests.conftest import make_test_plans


@pytest.fixture
def uri_credentials_undone(monkeypatch):
    """The AWS_* variables a command takes from a URI are removed after the test (they stay in a CLI's process)."""
    for name in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, FORWARD_ENV):
        monkeypatch.setenv(name, "")  # records the variable's state (delenv alone records nothing when unset)
        monkeypatch.delenv(name)


def test_preprocess_writes_cases_plans_and_splits_under_an_s3_root_and_a_rerun_skips_them(synth_task, s3_root):
    cfg = PreprocessConfig(data=str(synth_task), results=s3_root, dim=3, nfolds=3)
    summary = preprocess_dataset(cfg)
    out = storage.join(s3_root, synth_task.name, "3d")
    assert summary.ok and summary.out_dir == out and len(summary.done) == 6
    names = storage.list_names(out)
    for case_id in summary.done:
        assert {f"{case_id}_x.npy", f"{case_id}_y.npy", f"{case_id}.json"} <= set(names)
    assert load_plans(out).dataset == synth_task.name
    assert load_splits(out) == kfold_splits(sorted(summary.done), n_splits=3)
    assert storage.read_json(storage.join(out, "fingerprint.json"))["n_cases"] == 6
    image = np.load(__import__("io").BytesIO(storage.read_bytes(storage.join(out, f"{summary.done[0]}_x.npy"))))
    assert image.dtype == np.float32 and image.ndim == 4

    again = preprocess_dataset(cfg)
    assert again.done == [] and sorted(again.skipped) == sorted(summary.done)


def test_cli_preprocess_with_an_unreachable_results_root_fails_before_any_work(synth_task, s3_server, capsys,
                                                                               uri_credentials_undone):
    results = f"s3://test:test@no-such-bucket/pre?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    status = cli.main(["preprocess", "--data", str(synth_task), "--results", results])
    err = capsys.readouterr().err.strip().splitlines()  # the "planning ..." progress line, then the one error
    assert status == 2 and [line for line in err if "error" in line] == err[-1:]
    assert err[-1].startswith("nnunet-ray preprocess: error: --results: cannot write s3://no-such-bucket/pre")


@pytest.mark.parametrize("shapes, spacings, target, dim, expected_voxels", [
    ([[10, 20, 20]], [[1.0, 1.0, 1.0]], [1.0, 1.0, 1.0], 3, 4000),  # unchanged grid
    ([[10, 20, 20]], [[2.0, 1.0, 1.0]], [1.0, 1.0, 1.0], 3, 8000),  # z upsampled twice
    ([[10, 20, 20], [5, 5, 5]], [[1.0, 1.0, 1.0]] * 2, [2.0, 2.0, 2.0], 3, 4000),  # downsampling: raw size rules
    ([[10, 20, 20]], [[3.0, 0.5, 0.5]], [1.0, 1.0, 1.0], 2, 4000),  # 2D keeps z; in-plane shrinks: raw rules
])
def test_case_memory_scales_with_the_largest_resampled_case(shapes, spacings, target, dim, expected_voxels):
    plans = make_test_plans(dim, spacing=tuple(target), in_channels=1)
    fingerprint = DatasetFingerprint(dataset="T", spacings=tuple(map(tuple, spacings)), cropped_shapes=(),
                                     shapes=tuple(map(tuple, shapes)))
    memory = case_memory_bytes(fingerprint, plans)
    assert memory == 768 * 1024**2 + expected_voxels * 2 * 8 * 6  # 1 channel + label, float64, 6 copies
    assert case_memory_bytes(None, plans) == 2 * 768 * 1024**2


def test_fingerprint_memory_comes_from_the_largest_case_headers(tmp_path):
    def case(case_id, shape, channels=1):
        image = tmp_path / f"{case_id}.nii.gz"
        write_nifti(np.zeros((*shape, channels) if channels > 1 else shape, np.float32), np.eye(4), image,
                    dtype=np.float32)
        label = tmp_path / f"{case_id}_label.nii.gz"
        write_nifti(np.zeros(shape, np.uint8), np.eye(4), label)
        return CaseFiles(case_id, (image,), label)

    cases = (case("small", (4, 5, 6)), case("two_channels", (10, 20, 30), channels=2),
             CaseFiles("missing", (tmp_path / "missing.nii.gz",), None))  # unreadable: its fingerprint reports it
    # 6000 voxels x (2 channels + label), float64, 2 copies, on top of the interpreter's base
    assert raw_case_memory_bytes(cases) == 768 * 1024**2 + 6000 * 3 * 8 * 2


def test_a_raw_dataset_on_s3_is_staged_and_keeps_its_name(synth_task, s3_root, tmp_path):
    raw = storage.join(s3_root, "raw", synth_task.name)
    storage.upload(synth_task, raw)
    summary = preprocess_dataset(PreprocessConfig(data=raw, results=str(tmp_path / "pre"), dim=3, nfolds=3))
    assert summary.ok and len(summary.done) == 6
    assert summary.out_dir == tmp_path / "pre" / synth_task.name / "3d"  # named after the dataset, not the copy


def test_a_raw_uri_without_dataset_json_is_one_line(s3_root, tmp_path, capsys, uri_credentials_undone):
    status = cli.main(["preprocess", "--data", storage.join(s3_root, "nothing"), "--results", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].endswith("/nothing/dataset.json: dataset.json not found")


def test_plan_of_a_raw_dataset_on_s3_prints_its_summary_line(synth_task, s3_root, capsys, uri_credentials_undone):
    raw = storage.join(s3_root, "raw_plan", synth_task.name)
    storage.upload(synth_task, raw)
    assert cli.main(["plan", "--data", raw, "--dim", "3"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("patch [") and "preset" in line
