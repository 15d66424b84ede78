"""A node-local copy of a dataset that lives on object storage: downloaded once per machine, then reused.

Training reads every preprocessed case many times per epoch (DALI memory-maps the ``.npy`` files), so a dataset on
``s3://`` / ``gs://`` is copied to local disk first. Several training workers of one node start together: a file
lock makes one of them download while the others wait, and the copy is renamed into place with its marker file
inside only once complete, so nobody ever reads a half copy (a copy killed mid-download is simply redone).

The copy lives in ``$NNUNET_RAY_STAGE_DIR`` (default ``<tmp>/nnunet_ray_stage``) under a key the caller derives
from the content (the plans hash), so new plans mean a new copy and an unchanged dataset is never fetched twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock

from nnunet_ray.data import storage
from nnunet_ray.data.dataset import DATASET_FILE, load_dataset
from nnunet_ray.data.types import DatasetError, DatasetInfo

STAGE_DIR_ENV = "NNUNET_RAY_STAGE_DIR"
MARKER = ".staged.json"  # written inside a copy last: a folder without it is incomplete
LOG_FILE = "staging.log"  # one line per download, for operators (and tests counting downloads)

logger = logging.getLogger(__name__)


def stage_root() -> Path:
    """This machine's staging folder: ``$NNUNET_RAY_STAGE_DIR``, else ``<tmp>/nnunet_ray_stage``."""
    return Path(os.environ.get(STAGE_DIR_ENV) or Path(tempfile.gettempdir()) / "nnunet_ray_stage")


def stage_folder(location: str, key: str, *, root: Path | None = None) -> Path:
    """The local folder to read ``location`` from: itself when it is a path, else a staged copy.

    Args:
        location: a folder path (shared filesystem: read in place) or a URI (copied once per machine and key).
        key: names the copy; derive it from the content (e.g. dataset, dim and plans hash).
        root: the staging folder (default :func:`stage_root`).

    Returns:
        A local folder holding the files of ``location``.

    Raises:
        FileNotFoundError: nothing exists at ``location``.
    """
    if not storage.is_uri(location):
        return Path(location)
    root = Path(root or stage_root())
    root.mkdir(parents=True, exist_ok=True)
    target = root / key
    if (target / MARKER).is_file():
        return target
    with FileLock(str(root / f"{key}.lock")):
        if (target / MARKER).is_file():  # another worker finished it while this one waited
            return target
        _download(location, target, key=key, root=root)
    return target


def _download(location: str, target: Path, *, key: str, root: Path) -> None:
    start = time.perf_counter()
    partial = root / f".partial.{os.getpid()}.{uuid.uuid4().hex[:8]}.{key}"
    try:
        storage.download(location, partial)
        record = {"source": storage.display(location), "host": socket.gethostname(), "pid": os.getpid(),
                  "seconds": round(time.perf_counter() - start, 3)}
        (partial / MARKER).write_text(json.dumps(record) + "\n")
        if target.exists():  # an earlier copy without its marker: killed mid-download
            shutil.rmtree(target)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    with (root / LOG_FILE).open("a") as log:
        log.write(json.dumps({"key": key, **record}) + "\n")
    logger.info("staged %s to %s in %.1f s", storage.display(location), target, record["seconds"])


def staged_copies(root: Path | None = None) -> list[dict[str, Any]]:
    """The downloads logged in ``root`` (default :func:`stage_root`), oldest first."""
    path = Path(root or stage_root()) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        digest = hashlib.sha1(storage.read_bytes(storage.join(location, DATASET_FILE))).hexdigest()[:16]
    except FileNotFoundError as err:
        raise DatasetError(f"{storage.display(location)}/dataset.json: dataset.json not found") from err
    raw = RawData(location, key=f"raw_{name}_{digest}")
    # The staged folder is named by its key; the dataset keeps its own name (it selects MSD presets and names outputs).
    return dataclasses.replace(load_dataset(raw.local_root()), name=name), raw
