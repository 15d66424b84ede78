"""Where a training run's files live when ``--data`` / ``--results`` are shared paths or cloud URIs.

    nnunet-ray train --data s3://bucket/pre/Task04_Hippocampus/3d --results s3://bucket/results --fold 0

- Checkpoints: Ray Train's ``storage_path`` + ``storage_filesystem`` (``storage_location``), uploaded by Ray in the
  background (``CheckpointUploadMode.ASYNC``) so the next epoch's steps do not wait for object storage
  (``--checkpoint-upload sync`` waits, as before).
- ``metrics.jsonl``, TensorBoard events: rank 0 writes them to a local mirror of the run folder and uploads a
  snapshot of it after every epoch in the background (``LogMirror``); a resumed run first pulls what an earlier
  attempt uploaded.
- ``--data`` on a URI is staged once per node to local disk, keyed by dataset, dim and plans hash
  (``nnunet_ray.data.staging``), because DALI reads every case many times per epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable

import pyarrow.fs as pafs
import ray.train
from ray.train import Checkpoint, CheckpointUploadMode

from nnunet_ray.config import TrainConfig
from nnunet_ray.data import storage
from nnunet_ray.data.staging import stage_folder
from nnunet_ray.planning.schema import PLANS_FILE, Plans
from nnunet_ray.runs.checkpoint import epoch_dir_name, is_epoch_dir_name
from nnunet_ray.runs.run_config import CONFIG_FILE
from nnunet_ray.training.logs import METRICS_FILE, TB_DIR

UPLOAD_MODES = {"async": CheckpointUploadMode.ASYNC, "sync": CheckpointUploadMode.SYNC}


def storage_location(results: str) -> tuple[str, pafs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Ray's ``RunConfig``: a local root as is, a URI opened once.

    The filesystem is passed explicitly so URI options (an S3-compatible endpoint) reach every worker.
    """
    if not storage.is_uri(results):
        return storage.absolute(results), None
    fs, path = storage.resolve(results)
    return path, fs


def location_of(results: str, fs_path: str) -> str:
    """The location (path or URI, with the root's options) of a path Ray reports in storage."""
    if not storage.is_uri(results):
        return fs_path
    scheme_and_user = results.split("?", 1)[0]
    _, root_path = storage.resolve(results)
    prefix = scheme_and_user[: len(scheme_and_user) - len(root_path)] if scheme_and_user.endswith(root_path) \
        else scheme_and_user.split("://", 1)[0] + "://"
    query = results.partition("?")[2]
    return prefix + fs_path + (f"?{query}" if query else "")


def stage_key(plans: Plans, dim: int) -> str:
    """The staging key of a preprocessed dataset: a new preprocessing hash means new arrays, so a new copy."""
    return f"{plans.dataset}_{dim}d_{plans.preprocessing_hash[:16]}"


def staged_config(cfg: TrainConfig, key: str) -> TrainConfig:
    """``cfg`` with ``data`` pointing at this node's local copy (itself when it is already a path)."""
    return dataclasses.replace(cfg, data=str(stage_folder(cfg.data, key)))


@contextlib.contextmanager
def resume_view(run_dir: str) -> Iterator[str | Path]:
    """What ``training.resume.check_resume`` reads: the run folder itself when it is a path; for a URI, a local
    folder of the run's name holding its newest checkpoint's config.json and plans.json (nothing else is fetched)."""
    if not storage.is_uri(run_dir):
        yield run_dir
        return
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_resume_") as tmp:
        local = Path(tmp) / PurePosixPath(storage.display(run_dir).rstrip("/")).name
        for name in reversed([n for n in storage.list_names(run_dir) if is_epoch_dir_name(n)]):
            files = {f: storage.join(run_dir, name, f) for f in (CONFIG_FILE, PLANS_FILE)}
            if all(storage.is_file(location) for location in files.values()):
                for file, location in files.items():
                    storage.download(location, local / name / file)
                break
        yield local


class LogMirror:
    """Rank 0's log folder: the run folder itself when it is a path, else a local copy uploaded each epoch.

    An epoch's upload runs in the background, so the next epoch's steps do not wait for object storage: ``push``
    copies the logs to a local snapshot (consistent: nothing writes them during the report) and uploads that. The
    next ``push`` first waits for the previous upload, so uploads stay in order and a slow store slows training
    down instead of queueing without bound; an upload's error surfaces there, or in ``close``.
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.remote = storage.is_uri(run_dir)
        self.local_dir = Path(tempfile.mkdtemp(prefix="nnunet_ray_logs_")) if self.remote else Path(run_dir)
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-upload") if self.remote else None
        self._pending: Future | None = None

    def pull(self) -> None:
        """Fetch the logs an earlier attempt uploaded, so a resumed run continues (and truncates) them."""
        if not self.remote:
            return
        for name in (METRICS_FILE, TB_DIR):
            if storage.exists(storage.join(self.run_dir, name)):
                storage.download(storage.join(self.run_dir, name), self.local_dir / name)

    def push(self, *, wait: bool = False) -> None:
        """Upload metrics.jsonl and the TensorBoard folder as they are now (no-op when the run folder is local).

        Args:
            wait: return only once this upload has finished.
        """
        if self._uploader is None:  # not self.remote
            return
        self._wait()
        snapshot = Path(tempfile.mkdtemp(prefix="nnunet_ray_logs_upload_"))
        for name in (METRICS_FILE, TB_DIR):
            source = self.local_dir / name
            if source.is_dir():
                shutil.copytree(source, snapshot / name)
            elif source.exists():
                shutil.copy2(source, snapshot / name)
        self._pending = self._uploader.submit(self._upload, snapshot)
        if wait:
            self._wait()

    def _upload(self, snapshot: Path) -> None:
        try:
            for child in sorted(snapshot.iterdir()):
                storage.upload(child, storage.join(self.run_dir, child.name))
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Final upload (waited for), then remove the local copy."""
        if self._uploader is not None:  # self.remote
            try:
                self.push(wait=True)
            finally:
                self._uploader.shutdown(wait=True)
                shutil.rmtree(self.local_dir, ignore_errors=True)


def upload_checkpoint(checkpoint: Checkpoint, dir_name: str) -> Checkpoint:
    """Ray Train's ``checkpoint_upload_fn`` for a results root on object storage: the checkpoint's files go up
    through ``storage.upload_to``, so an upload that fails (the store unreachable) fails the report naming the
    object, where Ray's own copy (``pyarrow.fs.copy_files``) ignores the failure and registers a checkpoint whose
    files never arrived. The destination is the one Ray would use: ``<run folder>/<dir_name>``."""
    run = ray.train.get_context().get_storage()
    path = f"{run.experiment_fs_path.rstrip('/')}/{dir_name}"
    storage.upload_to(checkpoint.path, run.storage_filesystem, path)
    return Checkpoint(path=path, filesystem=run.storage_filesystem)


def epoch_reporter(mirror: LogMirror | None, upload: str) -> Callable[[dict, Path | None], None]:
    """``fit``'s report callback: rank 0 uploads its logs, then every rank reports (Ray's barrier).

    With ``upload="async"`` rank 0's checkpoint is copied to a folder Ray owns and uploads in the background
    (deleting it afterwards), because ``fit`` removes its own temporary folder as soon as the report returns. On
    object storage ``upload_checkpoint`` uploads it.
    """
    mode = UPLOAD_MODES[upload]
    upload_fn = upload_checkpoint if mirror is not None and mirror.remote else None  # only rank 0 has a checkpoint

    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        if mirror is not None:
            mirror.push()
        checkpoint = None
        if checkpoint_dir is not None:
            if mode is CheckpointUploadMode.ASYNC:
                owned = Path(tempfile.mkdtemp(prefix="nnunet_ray_upload_"))
                checkpoint_dir = Path(shutil.copytree(checkpoint_dir, owned, dirs_exist_ok=True))
            checkpoint = Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=epoch_dir_name(metrics["epoch"]),
                         checkpoint_upload_mode=mode, checkpoint_upload_fn=upload_fn)

    return report
