"""Folds equal to sklearn KFold(shuffle=True, random_state=seed) on sorted ids, and splits.json I/O."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_ray.data.folds import (
    CaseSetChanged,
    import_splits,
    kfold_splits,
    read_splits,
    settled_splits,
    sorted_case_ids,
    splits_hash,
    write_splits,
)

# nnU-Net writes splits_final.json with KFold(5, shuffle=True, random_state=12345) on the sorted case ids, the
# same call as NVIDIA's reference. These are folds 0-2 of one such file published for a 30-case dataset
# (github.com/EvaBr/cardiovas, splits_final.json; its folds 3-4 were edited by hand there, so they are not used).
# They were produced by scikit-learn itself, so they check the whole rule independently of this code.
PUBLISHED_IDS = [f"Diseased_{i}" for i in (2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 20)] + \
                [f"Normal_{i}" for i in (2, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)]
PUBLISHED_VAL = [
    ["Diseased_13", "Diseased_2", "Diseased_6", "Normal_11", "Normal_14", "Normal_5"],
    ["Diseased_10", "Diseased_16", "Diseased_17", "Normal_16", "Normal_17", "Normal_2"],
    ["Diseased_3", "Diseased_4", "Diseased_7", "Normal_15", "Normal_18", "Normal_19"],
]


def test_matches_published_nnunet_splits() -> None:
    # nnU-Net v2 sorts bare ids (Diseased_2 < Diseased_20); input order must not matter.
    splits = kfold_splits(PUBLISHED_IDS[::-1], n_splits=5, seed=12345, order="ids")
    assert [fold["val"] for fold in splits[:3]] == PUBLISHED_VAL


def _ids(n: int) -> list[str]:
    return [f"case_{i:02d}" for i in range(n)]


# Worked by hand from np.random.RandomState(12345).shuffle(np.arange(n)):
#   n = 10 -> [0, 7, 3, 9, 6, 4, 1, 8, 5, 2]; 5 folds of 2 take consecutive pairs, each sorted.
#   n = 7  -> [6, 3, 4, 0, 1, 5, 2]; 3 folds of sizes 3, 2, 2 (7 // 3 = 2, the first 7 % 3 = 1 fold gets one more).
@pytest.mark.parametrize("n, k, val_indices", [
    (10, 5, [[0, 7], [3, 9], [4, 6], [1, 8], [2, 5]]),
    (7, 3, [[3, 4, 6], [0, 1], [2, 5]]),
])
def test_hand_computed_membership(n: int, k: int, val_indices: list[list[int]]) -> None:
    ids = _ids(n)
    splits = kfold_splits(ids, n_splits=k)
    assert [fold["val"] for fold in splits] == [[ids[i] for i in fold] for fold in val_indices]
    for fold in splits:
        assert fold["train"] == [c for c in ids if c not in fold["val"]]  # complement, sorted


@pytest.mark.parametrize("n, k", [(5, 5), (6, 5), (11, 4), (2, 2), (23, 5)])
def test_partition(n: int, k: int) -> None:
    ids = _ids(n)
    splits = kfold_splits(ids, n_splits=k, seed=7)
    vals = [fold["val"] for fold in splits]
    assert sorted(c for val in vals for c in val) == ids  # every case validated exactly once
    assert [len(v) for v in vals] == [n // k + (i < n % k) for i in range(k)]
    for fold in splits:
        assert fold["val"] == sorted(fold["val"]) and fold["train"] == sorted(fold["train"])
        assert sorted(fold["train"] + fold["val"]) == ids


def test_seed_changes_folds() -> None:
    assert kfold_splits(_ids(10), seed=0) != kfold_splits(_ids(10), seed=12345)
    assert kfold_splits(_ids(10), seed=0) == kfold_splits(_ids(10), seed=0)


@pytest.mark.parametrize("ids, k, match", [
    (_ids(3), 5, "cannot make 5 folds from 3 cases"),
    (_ids(3), 1, "at least 2 folds"),
    (["a", "b", "a", "c"], 2, r"duplicate case ids: \['a'\]"),
])
def test_bad_requests(ids: list[str], k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        kfold_splits(ids, n_splits=k)


def test_same_as_sklearn_when_installed() -> None:
    model_selection = pytest.importorskip("sklearn.model_selection")
    for n, k, seed in [(10, 5, 12345), (23, 5, 12345), (7, 3, 0), (41, 4, 3)]:
        ids = _ids(n)
        expected = [{"train": [ids[i] for i in tr], "val": [ids[i] for i in va]}
                    for tr, va in model_selection.KFold(k, shuffle=True, random_state=seed).split(np.arange(n))]
        assert kfold_splits(ids, n_splits=k, seed=seed) == expected


def test_write_read_round_trip(tmp_path: Path) -> None:
    splits = kfold_splits(_ids(6), n_splits=3)
    path = tmp_path / "splits.json"
    write_splits(path, splits)
    assert read_splits(path) == splits
    assert [p.name for p in tmp_path.iterdir()] == ["splits.json"]  # temporary file renamed away


@pytest.mark.parametrize("content, match", [
    ("{not json", "invalid JSON"),
    ("[]", "non-empty list of folds"),
    ('[{"train": ["a"]}]', r"fold 0 must be"),
    ('[{"train": ["a"], "val": [1]}]', r"fold 0 must be"),
    ('[{"train": ["a", "b"], "val": ["b"]}]', r"fold 0 has cases in both train and val: \['b'\]"),
])
def test_read_rejects(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "splits.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        read_splits(path)
    assert str(path) in str(err.value)


def test_write_rejects_bad_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fold 0 must be"):
        write_splits(tmp_path / "s.json", [{"train": ["a"]}])
    assert not (tmp_path / "s.json").exists()


def test_reads_nnunet_splits_final(tmp_path: Path) -> None:
    """nnU-Net's splits_final.json has the same shape and can be used as is."""
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["b", "c"], "val": ["a"]}], indent=4))
    assert read_splits(path) == [{"train": ["b", "c"], "val": ["a"]}]


UNPADDED = [f"liver_{i}" for i in (1, 2, 10, 11, 100, 101, 3, 30)]


def test_reference_order_is_the_sorted_file_names() -> None:
    # sorted(glob("*_x.npy")): "liver_100_x.npy" < "liver_10_x.npy" since "0" < "_"; bare ids sort the other way.
    assert sorted_case_ids(["liver_10", "liver_100", "liver_2"]) == ["liver_100", "liver_10", "liver_2"]
    assert sorted_case_ids(["liver_10", "liver_100", "liver_2"], order="ids") == ["liver_10", "liver_100", "liver_2"]


def test_default_folds_follow_the_reference_file_order() -> None:
    files = sorted(f"{c}_x.npy" for c in UNPADDED)  # what the reference globs
    order = np.arange(len(files))
    np.random.RandomState(12345).shuffle(order)  # KFold(shuffle=True, random_state=12345)'s permutation
    # 8 cases, 4 folds of 2: fold 0 validates the files at the first two shuffled positions.
    first_val = sorted(files[i] for i in order[:2])
    splits = kfold_splits(UNPADDED, n_splits=4)
    assert sorted(f"{c}_x.npy" for c in splits[0]["val"]) == first_val
    assert splits != kfold_splits(UNPADDED, n_splits=4, order="ids")  # the bare-id order really differs here


def test_reference_order_same_as_sklearn_over_file_names() -> None:
    model_selection = pytest.importorskip("sklearn.model_selection")
    files = sorted(f"{c}_x.npy" for c in UNPADDED)
    expected = [{"train": [files[i][:-6] for i in tr], "val": [files[i][:-6] for i in va]}
                for tr, va in model_selection.KFold(4, shuffle=True, random_state=12345).split(files)]
    assert kfold_splits(UNPADDED, n_splits=4) == expected


def _write(tmp_path: Path, splits: object) -> Path:
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(splits))
    return path


def test_import_splits_accepts_an_nnunet_v2_file(tmp_path: Path) -> None:
    splits = kfold_splits(UNPADDED, n_splits=4, order="ids")  # as nnU-Net v2 writes it
    assert import_splits(_write(tmp_path, splits), UNPADDED) == splits


@pytest.mark.parametrize("splits, match", [
    ([{"train": ["liver_1"], "val": ["liver_2", "liver_9"]}], r"not in the dataset: \['liver_9'\]"),
    ([{"train": [], "val": ["liver_1", "liver_2"]}, {"train": [], "val": ["liver_2"]}],
     "liver_2 is validated in fold 0 and fold 1"),
    ([{"train": ["liver_2"], "val": ["liver_1"]}], r"2 cases are in no fold's val list: \['liver_2', 'liver_3'\]"),
])
def test_import_splits_rejects(tmp_path: Path, splits: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        import_splits(_write(tmp_path, splits), ["liver_1", "liver_2", "liver_3"])


def test_splits_hash_names_the_folds_not_the_list_order() -> None:
    splits = kfold_splits(_ids(10), n_splits=5)
    shuffled = [{"val": fold["val"][::-1], "train": fold["train"][::-1]} for fold in splits]
    assert splits_hash(shuffled) == splits_hash(splits) and len(splits_hash(splits)) == 16
    assert splits_hash(splits[::-1]) != splits_hash(splits)  # fold i is another fold
    assert splits_hash(kfold_splits(_ids(10), n_splits=5, seed=0)) != splits_hash(splits)


FIVE = kfold_splits(_ids(10), n_splits=5)
IMPORTED = [{"train": _ids(10)[5:], "val": _ids(10)[:5]}, {"train": _ids(10)[:5], "val": _ids(10)[5:]}]


@pytest.mark.parametrize("existing, case_ids, kwargs, expected", [
    (None, _ids(10), {}, FIVE),  # no file yet: made
    (FIVE, _ids(10), {}, None),  # the same cases: kept
    (IMPORTED, _ids(10), {}, None),  # imported earlier: kept by a plain rerun, whatever --nfolds says
    (FIVE, _ids(10), {"imported": IMPORTED}, IMPORTED),  # --splits FILE: the explicit choice
    (IMPORTED, _ids(10), {"imported": IMPORTED}, None),  # --splits FILE equal to what is there: nothing to write
    (IMPORTED, _ids(11), {"renew": True}, kfold_splits(_ids(11), n_splits=5)),  # --new-splits
    (FIVE, _ids(9), {"failed": ["case_09"]}, None),  # a case failing now is reported as failed, not a new case set
    (None, _ids(1), {}, None),  # one case: no folds to make
])
def test_settled_splits(existing, case_ids, kwargs, expected) -> None:
    assert settled_splits(existing, case_ids, nfolds=5, **kwargs) == expected


@pytest.mark.parametrize("case_ids, added, removed", [
    (_ids(11), ["case_10"], []),  # added to dataset.json, or a case that failed before now succeeds
    (_ids(9), [], ["case_09"]),
    ([*_ids(9), "new"], ["new"], ["case_09"]),
])
def test_a_changed_case_set_is_refused_naming_the_cases(case_ids, added, removed) -> None:
    with pytest.raises(CaseSetChanged) as err:
        settled_splits(FIVE, case_ids, nfolds=5)
    assert (err.value.added, err.value.removed) == (added, removed)
    assert all(c in str(err.value) for c in added + removed) and "\n" not in str(err.value)
