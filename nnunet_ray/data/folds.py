"""Cross-validation folds, identical to the reference's (or to nnU-Net v2's), and imported splits files.

NVIDIA's reference (``data_loading/data_module.py``) runs
``sklearn.model_selection.KFold(n_splits, shuffle=True, random_state=12345)`` over ``sorted(glob("*_x.npy"))``:
the preprocessed *file names*, which order unpadded ids differently from the bare ids nnU-Net v2 sorts
(``liver_100_x.npy`` < ``liver_10_x.npy`` because ``"0" < "_"``, while ``liver_10`` < ``liver_100``). That is
reproduced here without scikit-learn: the same ``np.random.RandomState(seed).shuffle`` of ``arange(n)``, the same
fold sizes (``n // k``, one more for the first ``n % k`` folds), and train/val listed in that sorted order, as
KFold's sorted indices give. So fold ``i`` validates on exactly the cases the reference's fold ``i`` does
(``order="ids"`` gives nnU-Net v2's folds instead). :func:`import_splits` takes an nnU-Net v2
``splits_final.json`` as is, after checking it against the dataset's cases.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_ray.data.atomic import save_json


ORDERS = ("reference", "ids")


def sorted_case_ids(case_ids: Sequence[str], order: str = "reference") -> list[str]:
    """Case ids in the order KFold sees them: by ``<id>_x.npy`` file name (the reference's) or by bare id."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return sorted(case_ids, key=(lambda c: f"{c}_x.npy") if order == "reference" else None)


def kfold_splits(case_ids: Sequence[str], n_splits: int = 5, seed: int = 12345, *,
                 order: str = "reference") -> list[dict[str, list[str]]]:
    """Split case ids into ``n_splits`` folds as ``KFold(n_splits, shuffle=True, random_state=seed)`` does.

    Args:
        case_ids: the training case ids, any order (they are sorted first, see ``order``).
        n_splits: number of folds, 2..len(case_ids).
        seed: the shuffle seed; 12345 is the reference's.
        order: ``"reference"`` sorts by ``<id>_x.npy`` as the reference's glob does; ``"ids"`` sorts the bare
            ids as nnU-Net v2 does.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, both lists in that sorted order; every case is in
        exactly one ``val`` list.

    Raises:
        ValueError: fewer than 2 folds, more folds than cases, or duplicate case ids.
    """
    ids = sorted_case_ids(case_ids, order)
    if len(set(ids)) != len(ids):
        dupes = sorted(c for c, count in Counter(ids).items() if count > 1)
        raise ValueError(f"duplicate case ids: {dupes}")
    n = len(ids)
    if n_splits < 2:
        raise ValueError(f"need at least 2 folds, got {n_splits}")
    if n_splits > n:
        raise ValueError(f"cannot make {n_splits} folds from {n} cases; use at most {n} folds")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_splits, n // n_splits, dtype=int)
    sizes[: n % n_splits] += 1
    splits, start = [], 0
    for size in sizes:
        in_val = np.zeros(n, dtype=bool)
        in_val[order[start:start + size]] = True
        start += size
        splits.append({"train": [ids[i] for i in np.flatnonzero(~in_val)],
                       "val": [ids[i] for i in np.flatnonzero(in_val)]})
    return splits


def _check_splits(splits: object, where: str) -> list[dict[str, list[str]]]:
    if not isinstance(splits, list) or not splits:
        raise ValueError(f"{where}: expected a non-empty list of folds")
    for i, fold in enumerate(splits):
        ok = isinstance(fold, dict) and all(
            isinstance(fold.get(k), list) and all(isinstance(c, str) for c in fold[k]) for k in ("train", "val"))
        if not ok:
            raise ValueError(f"{where}: fold {i} must be {{\"train\": [ids], \"val\": [ids]}}")
        overlap = set(fold["train"]) & set(fold["val"])
        if overlap:
            raise ValueError(f"{where}: fold {i} has cases in both train and val: {sorted(overlap)}")
    return splits  # type: ignore[return-value]


def write_splits(path: str | Path, splits: list[dict[str, list[str]]]) -> None:
    """Write ``splits`` (as from :func:`kfold_splits`) to a JSON file, atomically (temporary name, then rename).

    Raises:
        ValueError: ``splits`` is not a list of ``{"train", "val"}`` string lists, or a fold mixes them.
    """
    path = Path(path)
    _check_splits(splits, str(path))
    save_json(path, splits)


def read_splits(path: str | Path) -> list[dict[str, list[str]]]:
    """Read a splits file written by :func:`write_splits` (or nnU-Net's ``splits_final.json``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid JSON or not a list of ``{"train", "val"}`` string lists; the message names the file.
    """
    path = Path(path)
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    return _check_splits(splits, str(path))


def import_splits(path: str | Path, case_ids: Sequence[str]) -> list[dict[str, list[str]]]:
    """Read an nnU-Net v2 ``splits_final.json`` (or a splits.json) and check it fits the dataset's cases.

    Args:
        path: the splits file.
        case_ids: every training case of the dataset.

    Returns:
        the folds, as read.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a splits file, an id that is not a case, two folds validating the same case, or
            cases no fold validates; the message names the file.
    """
    splits = read_splits(path)
    known = set(case_ids)
    for i, fold in enumerate(splits):
        unknown = sorted(set(fold["train"] + fold["val"]) - known)
        if unknown:
            raise ValueError(f"{path}: fold {i} names cases that are not in the dataset: {unknown[:5]}")
    seen: dict[str, int] = {}
    for i, fold in enumerate(splits):
        for case_id in fold["val"]:
            if case_id in seen:
                raise ValueError(f"{path}: {case_id} is validated in fold {seen[case_id]} and fold {i}")
            seen[case_id] = i
    missing = sorted(known - set(seen))
    if missing:
        raise ValueError(f"{path}: {len(missing)} cases are in no fold's val list: {missing[:5]}")
    return splits
