"""Cross-validation folds, identical to the reference's (or to nnU-Net v2's), and imported splits files.

NVIDIA's reference (``data_loading/data_module.py``) runs
``sklearn.model_selection.KFold(n_splits, shuffle=True, random_state=12345)`` over ``sorted(glob("*_x.npy"))``:
the preprocessed *file names*, which order unpadded ids differently from the bare ids nnU-Net v2 sorts
(``liver_100_x.npy`` < ``liver_10_x.npy`` because ``"0" < "_"``, while ``liver_10`` < ``liver_100``). That is
reproduced here without scikit-learn: the same ``np.random.RandomState(seed).shuffle`` of ``arange(n)``, the same
fold sizes (``n // k``, one more for the first ``n % k`` folds), and train/val listed in that sorted order, as
KFold's sorted indices give. So fold ``i`` validates on exactly the cases the reference's fold ``i`` does
(``order="ids"`` gives nnU-Net v2's folds instead). :func:`import_splits` takes an nnU-Net v2
``splits_final.json`` as is, after checking it against the dataset's cases. :func:`splits_hash` names a set of
folds, so a training run can record the folds it used and a rerun, resume or ensemble can tell they changed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_ray.config import ConfigError, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.atomic import save_json
from nnunet_ray.data.types import DatasetError

ORDERS = ("reference", "ids")
SPLITS_FILE = "splits.json"  # the folds of a preprocessed folder; every run of that folder trains on them


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
    permutation = np.arange(n)
    np.random.RandomState(seed).shuffle(permutation)
    sizes = np.full(n_splits, n // n_splits, dtype=int)
    sizes[: n % n_splits] += 1
    splits, start = [], 0
    for size in sizes:
        in_val = np.zeros(n, dtype=bool)
        in_val[permutation[start:start + size]] = True
        start += size
        splits.append({"train": [ids[i] for i in np.flatnonzero(~in_val)],
                       "val": [ids[i] for i in np.flatnonzero(in_val)]})
    return splits


def _check_splits(splits: object, where: str) -> list[dict[str, list[str]]]:
    if not isinstance(splits, list) or not splits:
        raise DatasetError(f"{where}: expected a non-empty list of folds")
    for i, fold in enumerate(splits):
        ok = isinstance(fold, dict) and all(
            isinstance(fold.get(k), list) and all(isinstance(c, str) for c in fold[k]) for k in ("train", "val"))
        if not ok:
            raise DatasetError(f"{where}: fold {i} must be {{\"train\": [ids], \"val\": [ids]}}")
        overlap = set(fold["train"]) & set(fold["val"])
        if overlap:
            raise DatasetError(f"{where}: fold {i} has cases in both train and val: {sorted(overlap)}")
    return splits


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
        DatasetError (a ValueError): invalid JSON or not a list of ``{"train", "val"}`` string lists; the message
            names the file.
    """
    path = Path(path)
    return parse_splits(path.read_text(encoding="utf-8"), str(path))


def parse_splits(text: str, where: str) -> list[dict[str, list[str]]]:
    """The folds in ``text``, a splits file's content (read from a path or a URI), checked as :func:`read_splits`.

    Raises:
        DatasetError (a ValueError): invalid JSON or not a list of ``{"train", "val"}`` string lists; the message
            names ``where``.
    """
    try:
        splits = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    return _check_splits(splits, where)


def splits_location(folder: str | Path) -> str:
    """The splits file of a preprocessed folder (a path or a URI)."""
    return storage.join(folder, SPLITS_FILE)


def load_splits(folder: str | Path) -> list[dict[str, list[str]]]:
    """The folds of a preprocessed folder (a path or a URI), checked as :func:`read_splits`.

    Raises:
        FileNotFoundError: the folder has no splits file.
        DatasetError (a ValueError): it is invalid; the message names it.
    """
    location = splits_location(folder)
    return parse_splits(storage.read_text(location), storage.display(location))


def save_splits(folder: str | Path, splits: list[dict[str, list[str]]]) -> None:
    """Write the folds of a preprocessed folder (a path or a URI), checked and atomically."""
    location = splits_location(folder)
    _check_splits(splits, storage.display(location))
    storage.write_json(location, splits)


def fold_case_ids(folder: str | Path, fold: int) -> tuple[list[str], list[str]]:
    """(training case ids, validation case ids) of ``fold`` in a preprocessed folder (a path or a URI).

    Raises:
        ConfigError: the folder has no splits file, or the fold does not exist (naming the flag).
    """
    try:
        splits = load_splits(folder)
    except FileNotFoundError as err:
        raise ConfigError(f"{flag_name('data')}: {storage.display(splits_location(folder))} not found; "
                          "run `nnunet-ray preprocess` first") from err
    try:
        return fold_cases(splits, fold)
    except IndexError as err:
        raise ConfigError(f"{flag_name('fold')}: {err}") from None


def fold_cases(splits: Sequence[dict[str, list[str]]], fold: int) -> tuple[list[str], list[str]]:
    """(training case ids, validation case ids) of ``fold`` in loaded splits.

    Raises:
        IndexError: there is no such fold, naming the folds there are.
    """
    if not 0 <= fold < len(splits):
        raise IndexError(f"{fold} is not in 0..{len(splits) - 1} ({len(splits)} folds)")
    return list(splits[fold]["train"]), list(splits[fold]["val"])



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


def splits_hash(splits: list[dict[str, list[str]]]) -> str:
    """A short content hash of the folds: equal for the same cases in the same folds, whatever the list order.

    Args:
        splits: one ``{"train": [...], "val": [...]}`` per fold, as :func:`read_splits` returns.

    Returns:
        16 hex digits (sha256 of the canonical JSON: fold order kept, case lists sorted).
    """
    canonical = [{"train": sorted(fold["train"]), "val": sorted(fold["val"])} for fold in splits]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()[:16]


def split_case_ids(splits: list[dict[str, list[str]]]) -> set[str]:
    """Every case id the folds name (in any fold's train or val list)."""
    return {case_id for fold in splits for key in ("train", "val") for case_id in fold[key]}


class CaseSetChanged(ValueError):
    """The folds of an existing splits file name other cases than the dataset has now (``added`` / ``removed``)."""

    def __init__(self, added: Sequence[str], removed: Sequence[str]) -> None:
        self.added, self.removed = sorted(added), sorted(removed)
        parts = [f"{label}: {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}"
                 for label, ids in (("not in any fold", self.added), ("no longer a case", self.removed)) if ids]
        super().__init__("the case set changed since the folds were made (" + "; ".join(parts) + ")")


def settled_splits(existing: list[dict[str, list[str]]] | None, case_ids: Sequence[str], *, nfolds: int,
                   imported: list[dict[str, list[str]]] | None = None, renew: bool = False,
                   failed: Sequence[str] = ()) -> list[dict[str, list[str]]] | None:
    """The folds a splits file must hold after cases were (re)preprocessed; None leaves the file as it is.

    Folds are made once and never silently replaced, because runs are trained (and resumed, and ensembled) on them:
    ``imported`` folds are taken as given (the explicit choice); ``renew`` makes new ``nfolds`` folds over
    ``case_ids``; without either, existing folds are kept as long as they name exactly ``case_ids``.

    Args:
        existing: the folds in the file now, or None when there is none.
        case_ids: the cases preprocessed successfully now.
        nfolds: folds to make (fewer when there are fewer cases).
        imported: folds from a file the user gave (``--splits``).
        renew: make new folds even though some exist (``--new-splits``).
        failed: cases that failed this time: missing from ``case_ids`` for a reason already reported, so not a
            change of the case set.

    Returns:
        the folds to write, or None (keep the file; or fewer than 2 cases, so there are no folds to make).

    Raises:
        CaseSetChanged: existing folds that name other cases, without ``imported`` or ``renew``.
    """
    if imported is not None:
        return None if existing is not None and splits_hash(existing) == splits_hash(imported) else imported
    if existing is None or renew:
        return kfold_splits(case_ids, n_splits=min(nfolds, len(case_ids))) if len(case_ids) >= 2 else None
    in_folds, now = split_case_ids(existing), set(case_ids)
    added, removed = now - in_folds, in_folds - now - set(failed)
    if added or removed:
        raise CaseSetChanged(sorted(added), sorted(removed))
    return None
