"""Crop tables, sharding and the numpy eval / predict loaders (no DALI)."""

import json

import numpy as np
import pytest
import torch

from nnunet_ray.data.types import CaseError
from nnunet_ray.loading.iterators import (
    batches_per_epoch,
    check_case,
    crop_table,
    eval_loader,
    predict_loader,
    shard_cases,
)
from nnunet_ray.preprocessing.record import CaseProperties, write_case_record


def test_crop_table_layout_hand_checked():
    table = crop_table("c", [4, 5, 6], {"1": [[0, 1, 2], [3, 4, 5]], "2": [[1, 1, 1]], "3": []})
    # Z Y X has_fg K | off n (class 1) | off n (class 2) | coords; class 3 has none, so is not present
    assert table.dtype == np.int32
    assert table.tolist() == [4, 5, 6, 1, 2, 9, 2, 15, 1, 0, 1, 2, 3, 4, 5, 1, 1, 1]


def test_crop_table_without_foreground_points_at_the_centre():
    assert crop_table("c", [4, 5, 6], {}).tolist() == [4, 5, 6, 0, 1, 7, 1, 2, 2, 3]


@pytest.mark.parametrize("coord", [[4, 0, 0], [0, -1, 0], [0, 0, 6]])
def test_crop_table_rejects_coordinates_outside(coord):
    with pytest.raises(CaseError, match="c7: foreground coordinates of class 1"):
        crop_table("c7", [4, 5, 6], {"1": [coord]})


@pytest.mark.parametrize("n, world, per_batch, expected", [(4, 2, 2, 1), (5, 2, 2, 2), (7, 1, 3, 3), (1, 1, 4, 1)])
def test_batches_per_epoch(n, world, per_batch, expected):
    assert batches_per_epoch(n, world, per_batch) == expected


def test_shard_cases_disjoint_and_complete():
    ids = [f"c{i}" for i in range(5)]
    shards = [shard_cases(ids, r, 2) for r in range(2)]
    assert shards == [["c0", "c2", "c4"], ["c1", "c3"]]


@pytest.mark.parametrize("rank, world", [(2, 2), (-1, 2), (0, 0)])
def test_shard_cases_rejects_bad_rank(rank, world):
    with pytest.raises(ValueError, match="rank"):
        shard_cases(["a", "b"], rank, world)


def _cases(case_writer, n=3):
    folder = None
    for i in range(n):
        folder = case_writer(f"c{i}", np.full((2, 4, 5, 6), i, np.float32), np.full((1, 4, 5, 6), i, np.uint8))
    return folder


def test_eval_loader_yields_rank_share_as_whole_volumes(case_writer):
    folder = _cases(case_writer)
    loaders = [eval_loader(folder, ["c0", "c1", "c2"], rank=r, world_size=2) for r in range(2)]
    assert [len(loader) for loader in loaders] == [2, 1]
    items = [item for loader in loaders for item in loader]
    assert [item["case_id"] for item in items] == ["c0", "c2", "c1"]
    for item in items:
        assert item["image"].shape == (1, 2, 4, 5, 6) and item["image"].dtype == torch.float32
        assert item["label"].shape == (1, 1, 4, 5, 6) and item["label"].dtype == torch.uint8
        assert item["image"].eq(int(item["case_id"][1])).all()


def test_predict_loader_gives_properties_not_labels(case_writer):
    folder = _cases(case_writer, n=1)
    (folder / "c0_y.npy").unlink()  # test cases have no label
    (item,) = list(predict_loader(folder, ["c0"]))
    assert "label" not in item and item["properties"].case_id == "c0"
    assert item["image"].shape == (1, 2, 4, 5, 6)


def test_eval_loader_missing_file_names_the_case(case_writer):
    folder = _cases(case_writer, n=1)
    (folder / "c0_y.npy").unlink()
    with pytest.raises(CaseError, match="c0: missing c0_y.npy"):
        list(eval_loader(folder, ["c0"]))


def test_check_case_returns_properties(case_writer):
    folder = _cases(case_writer, n=1)
    assert check_case(folder, "c0", in_channels=2).shape == (4, 5, 6)


@pytest.mark.parametrize("damage, message", [
    (lambda f: np.save(f / "c0_y.npy", np.zeros((1, 4, 5, 7), np.uint8)), "label shape"),
    (lambda f: write_case_record(f, CaseProperties.unprocessed("c0", (9, 9, 9))), "differs from the arrays"),
    (lambda f: (f / "c0.json").write_text("{oops"), r"c0: .*c0.json: not JSON \(.*\); run preprocess again"),
    (lambda f: (f / "c0.json").write_text(json.dumps({"shape": [4, 5, 6]})),
     r"c0.json: not a case record \(missing original_shape, .*\); run preprocess again"),
    (lambda f: (f / "c0.json").write_text('{"version": 5}'), r"c0.json: version 5 is newer"),
    (lambda f: (f / "c0.json").unlink(), "missing c0.json"),
    (lambda f: (f / "c0_x.npy").unlink(), "missing c0_x.npy"),
])
def test_check_case_errors(case_writer, damage, message):
    folder = _cases(case_writer, n=1)
    damage(folder)
    with pytest.raises(CaseError, match=message):
        check_case(folder, "c0")


def test_check_case_channel_mismatch(case_writer):
    folder = _cases(case_writer, n=1)
    with pytest.raises(CaseError, match="2 channels, plans say 4"):
        check_case(folder, "c0", in_channels=4)
