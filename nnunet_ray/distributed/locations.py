"""The preprocessed folder and the results root at a location that may be a URI (``s3://``, ``gs://``).

The pure stages read and write local files; this module bridges them to a root anywhere: ``read_plans`` /
``write_plans`` / ``read_splits`` / ``write_splits`` read and write the small files there, ``case_writer``
preprocesses a case into node-local scratch and uploads it (the ``.json`` that marks a case done goes last, so a
reader never sees a half case), and ``case_memory_bytes`` / ``raw_case_memory_bytes`` size a preprocessing /
fingerprinting actor from the dataset fingerprint / the NIfTI headers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from nnunet_ray.config import ConfigError
from nnunet_ray.data import storage
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import read_splits as read_local_splits
from nnunet_ray.data.folds import write_splits as write_local_splits
from nnunet_ray.data.nifti import read_header
from nnunet_ray.data.staging import stage_folder
from nnunet_ray.data.types import CaseFiles, DatasetError, DatasetInfo
from nnunet_ray.loading.fold_data import fold_cases
from nnunet_ray.planning.schema import (
    PLANS_FILE,
    Plans,
    PlansError,
    PlansNotFoundError,
    load_plans,
    plans_from_json,
    save_plans,
)
from nnunet_ray.preprocessing.case import preprocess_case

SPLITS_FILE, FINGERPRINT_FILE = "splits.json", "fingerprint.json"
BASE_MEMORY = 768 * 1024**2  # bytes: an actor's interpreter with numpy, scipy, nibabel and torch imported
WORKING_COPIES = 6  # float64 copies of a resampled case alive at once (zoom input/output, normalised, padded)
FINGERPRINT_COPIES = 2  # a raw case read as float64, plus the nonzero / foreground masks and samples


@dataclasses.dataclass(frozen=True)
class RawData:
    """Where a raw dataset lives: a folder path read in place, or a URI staged once per node (``key``)."""

    location: str
    key: str = ""

    def local_root(self) -> Path:
        """This node's folder holding the dataset (downloads it first on a URI, once per node)."""
        return stage_folder(self.location, self.key) if self.key else Path(self.location)


def open_raw_dataset(data: str) -> tuple[DatasetInfo, RawData]:
    """``load_dataset`` for a raw dataset folder path or URI (staged on this node, keyed by its dataset.json).

    Raises:
        DatasetError: no dataset.json there, or it is invalid (as ``load_dataset``).
    """
    location = storage.absolute(data)
    if not storage.is_uri(location):
        return load_dataset(location), RawData(location)
    name = PurePosixPath(storage.display(location).rstrip("/")).name
    try:
        digest = hashlib.sha1(storage.read_bytes(storage.join(location, "dataset.json"))).hexdigest()[:16]
    except FileNotFoundError as err:
        raise DatasetError(f"{storage.display(location)}/dataset.json: dataset.json not found") from err
    raw = RawData(location, key=f"raw_{name}_{digest}")
    # The staged folder is named by its key; the dataset keeps its own name (it selects MSD presets and names outputs).
    return dataclasses.replace(load_dataset(raw.local_root()), name=name), raw


def read_plans(folder: str) -> Plans:
    """``load_plans`` for a folder path or URI.

    Raises:
        PlansNotFoundError: there is no plans.json in ``folder``.
        PlansError: it is not valid JSON, misses a key, or is of a newer version.
    """
    if not storage.is_uri(folder):
        return load_plans(folder)
    location = storage.join(folder, PLANS_FILE)
    try:
        text = storage.read_text(location)
    except FileNotFoundError as err:
        raise PlansNotFoundError(f"no plans.json in {storage.display(folder)}: run `nnunet-ray plan` "
                                 "(or preprocess) first") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PlansError(f"{storage.display(location)}: not valid JSON ({err})") from err
    return plans_from_json(data, source=storage.display(location))


def write_plans(folder: str, plans: Plans) -> None:
    """``save_plans`` (atomic) into ``folder``, a path or a URI."""
    if storage.is_uri(folder):
        storage.write_json(storage.join(folder, PLANS_FILE), plans.to_json())
    else:
        save_plans(folder, plans)


def read_splits(folder: str) -> list[dict[str, list[str]]]:
    """The folds of ``folder/splits.json`` (path or URI); FileNotFoundError when there is none."""
    if not storage.is_uri(folder):
        return read_local_splits(Path(folder) / SPLITS_FILE)
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_splits_") as tmp:
        storage.download(storage.join(folder, SPLITS_FILE), Path(tmp) / SPLITS_FILE)
        return read_local_splits(Path(tmp) / SPLITS_FILE)


def fold_case_ids(folder: str, fold: int) -> tuple[list[str], list[str]]:
    """``fold_cases`` (training and validation case ids of ``fold``) for a folder path or URI.

    Raises:
        ConfigError: no splits.json, or the fold does not exist (naming the flag).
    """
    if not storage.is_uri(folder):
        return fold_cases(folder, fold)
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_splits_") as tmp:
        if storage.is_file(storage.join(folder, SPLITS_FILE)):
            storage.download(storage.join(folder, SPLITS_FILE), Path(tmp) / SPLITS_FILE)
        try:
            return fold_cases(tmp, fold)
        except ConfigError as err:  # name the real folder, not the temporary copy
            raise ConfigError(str(err).replace(str(Path(tmp) / SPLITS_FILE),
                                               storage.display(storage.join(folder, SPLITS_FILE)))) from err


def write_splits(folder: str, splits: list[dict[str, list[str]]]) -> None:
    """``write_splits`` (validated, atomic) into ``folder`` (path or URI)."""
    if not storage.is_uri(folder):
        write_local_splits(Path(folder) / SPLITS_FILE, splits)
        return
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_splits_") as tmp:
        write_local_splits(Path(tmp) / SPLITS_FILE, splits)
        storage.upload(Path(tmp) / SPLITS_FILE, storage.join(folder, SPLITS_FILE))


def case_writer(plans: Plans, out: str, mode: str) -> Callable[[CaseFiles], dict]:
    """The per-case function Ray Data maps: ``preprocess_case`` into ``out``, a folder path or a URI."""
    if not storage.is_uri(out):
        return functools.partial(_preprocess_in_place, plans=plans, out=Path(out), mode=mode)
    return functools.partial(_preprocess_and_upload, plans=plans, out=out, mode=mode)


def _preprocess_in_place(case: CaseFiles, *, plans: Plans, out: Path, mode: str) -> dict:
    return preprocess_case(case, plans, out, mode=mode)


def _preprocess_and_upload(case: CaseFiles, *, plans: Plans, out: str, mode: str) -> dict:
    """Preprocess into node-local scratch, then upload the arrays and, last, the ``.json`` that marks it done.

    Whether the case is done already is decided from ``out`` itself; a case that fails loses its older outputs
    there too, as in a local folder.
    """
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_case_") as tmp:
        record = preprocess_case(case, plans, Path(tmp), mode=mode, done_in=out)
        if record["status"] == "failed":
            for suffix in (".json", "_x.npy", "_y.npy"):  # the done-marker first
                with contextlib.suppress(OSError):
                    storage.delete(storage.join(out, f"{case.case_id}{suffix}"))
        if record["status"] not in ("done", "reprocessed"):
            return record
        names = sorted(p.name for p in Path(tmp).iterdir())
        try:
            for name in sorted(names, key=lambda n: n.endswith(".json")):  # the marker last
                storage.upload(Path(tmp) / name, storage.join(out, name))
        except OSError as err:
            record.update(status="failed", error=f"{case.case_id}: cannot upload to {storage.display(out)} "
                                                  f"({err})")
    return record


def raw_case_memory_bytes(cases: tuple[CaseFiles, ...]) -> int:
    """Memory one fingerprinting actor needs for the largest raw case, from the NIfTI headers (no voxels read).

    A case is read at its own resolution: every channel and the label as float64, plus a foreground mask.
    A header that cannot be read counts as nothing here: fingerprinting then reports that case on one line.
    """
    largest = 0.0
    for case in cases:
        files = (*case.images, *((case.label,) if case.label else ()))
        try:
            largest = max(largest, sum(float(np.prod(read_header(f).get_data_shape())) for f in files))
        except Exception:  # noqa: BLE001 - the case's own error is reported by the fingerprint itself
            continue
    return int(BASE_MEMORY + largest * 8 * FINGERPRINT_COPIES)


def case_memory_bytes(fingerprint: dict | None, plans: Plans) -> int:
    """Memory one preprocessing actor needs for the largest case: its resampled size times the working copies.

    Args:
        fingerprint: fingerprint.json content (per-case ``shapes`` and ``spacings``), or None when unknown.
        plans: the plans (target ``spacing``, ``dim``, ``in_channels``).

    Returns:
        Bytes to reserve per actor (Ray schedules actors only where that much memory is free).
    """
    if not fingerprint or not fingerprint.get("shapes"):
        return BASE_MEMORY * 2
    shapes = np.asarray(fingerprint["shapes"], dtype=np.float64)  # (cases, 3) voxels (z, y, x)
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)  # (cases, 3) mm
    target = np.asarray(plans.spacing, dtype=np.float64)
    if plans.dim == 2:  # 2D keeps each case's own z spacing
        target = np.column_stack([spacings[:, 0], np.broadcast_to(target[1:], (len(spacings), 2))])
    voxels = float(np.max(np.prod(np.maximum(shapes * spacings / target, shapes), axis=1)))
    channels = plans.in_channels + 1  # + the label
    return int(BASE_MEMORY + voxels * channels * 8 * WORKING_COPIES)
