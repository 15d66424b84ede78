"""Staging a dataset from s3:// to local disk: once per machine and key, even when several workers start together."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from nnunet_ray.data import staging, storage


@pytest.fixture
def remote_dataset(s3_root, tmp_path):
    src = tmp_path / "pre"
    src.mkdir()
    for i in range(3):
        (src / f"case{i}_x.npy").write_bytes(bytes([i]) * 50_000)
    (src / "plans.json").write_text('{"dim": 3}')
    location = storage.join(s3_root, "pre", "3d")
    storage.upload(src, location)
    return location, src


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != staging.MARKER)


def test_a_path_is_read_in_place(tmp_path):
    assert staging.stage_folder(str(tmp_path), "key", root=tmp_path / "stage") == tmp_path
    assert not (tmp_path / "stage").exists()


def test_a_uri_is_copied_once_and_then_reused(remote_dataset, tmp_path):
    location, src = remote_dataset
    first = staging.stage_folder(location, "Task_3d_abc", root=tmp_path / "stage")
    second = staging.stage_folder(location, "Task_3d_abc", root=tmp_path / "stage")
    assert first == second == tmp_path / "stage" / "Task_3d_abc"
    assert _names(first) == _names(src)
    assert (first / "case2_x.npy").read_bytes() == (src / "case2_x.npy").read_bytes()
    assert len(staging.staged_copies(tmp_path / "stage")) == 1


def test_another_key_is_another_copy(remote_dataset, tmp_path):
    location, _ = remote_dataset
    staging.stage_folder(location, "hash_a", root=tmp_path / "stage")
    staging.stage_folder(location, "hash_b", root=tmp_path / "stage")
    assert [c["key"] for c in staging.staged_copies(tmp_path / "stage")] == ["hash_a", "hash_b"]


def test_a_copy_without_its_marker_is_redone(remote_dataset, tmp_path):
    location, src = remote_dataset
    broken = tmp_path / "stage" / "k"
    broken.mkdir(parents=True)
    (broken / "case0_x.npy").write_bytes(b"half")  # what a download killed midway leaves
    staged = staging.stage_folder(location, "k", root=tmp_path / "stage")
    assert (staged / "case0_x.npy").read_bytes() == (src / "case0_x.npy").read_bytes()


def _stage(args: tuple[str, str]) -> str:
    location, root = args
    return str(staging.stage_folder(location, "same_key", root=Path(root)))


def test_workers_starting_together_download_once(remote_dataset, tmp_path):
    location, src = remote_dataset
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        paths = pool.map(_stage, [(location, str(tmp_path / "stage"))] * 4)
    assert len(set(paths)) == 1
    assert len(staging.staged_copies(tmp_path / "stage")) == 1
    assert _names(Path(paths[0])) == _names(src)
    assert not [p for p in (tmp_path / "stage").iterdir() if p.name.startswith(".partial")]


def test_a_missing_source_is_an_error_and_leaves_nothing(s3_root, tmp_path):
    with pytest.raises(FileNotFoundError):
        staging.stage_folder(storage.join(s3_root, "absent"), "k", root=tmp_path / "stage")
    assert not (tmp_path / "stage" / "k").exists()


def test_staging_logs_no_credentials(remote_dataset, tmp_path, caplog):
    location, _ = remote_dataset  # s3://test:test@bucket/...
    secret_location = location.replace("test:test@", "AKID:st4g1ng-s3cr3t@")
    with caplog.at_level("INFO", logger="nnunet_ray.data.staging"):
        staged = staging.stage_folder(secret_location, "Task_3d_secret", root=tmp_path / "stage")
    logged = caplog.text + (tmp_path / "stage" / staging.LOG_FILE).read_text() + (staged / staging.MARKER).read_text()
    assert "staged" in caplog.text and "st4g1ng-s3cr3t" not in logged and "AKID" not in logged
