"""Cross-validation folds, identical to the reference's and to nnU-Net's.

The reference (and nnU-Net v1/v2) split the sorted case ids with
``sklearn.model_selection.KFold(n_splits, shuffle=True, random_state=12345)``. That is reproduced here without
scikit-learn: the same ``np.random.RandomState(seed).shuffle`` of ``arange(n)``, the same fold sizes (``n // k``,
one more for the first ``n % k`` folds), and train/val listed in sorted-id order, as KFold's sorted indices give.
So fold ``i`` here validates on exactly the cases the reference's fold ``i`` does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_ray.data.atomic import save_json


def kfold_splits(case_ids: Sequence[str], n_splits: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Split case ids into ``n_splits`` folds as ``KFold(n_splits, shuffle=True, random_state=seed)`` does.

    Args:
        case_ids: the training case ids, any order (they are sorted first).
        n_splits: number of folds, 2..len(case_ids).
        seed: the shuffle seed; 12345 is the reference's.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, both lists in sorted order; every case is in exactly
        one ``val`` list.

    Raises:
        ValueError: fewer than 2 folds, more folds than cases, or duplicate case ids.
    """
    ids = sorted(case_ids)
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
