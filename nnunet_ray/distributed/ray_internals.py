"""Everything the Ray layer relies on that is not Ray's public API, in one place (verified against Ray 2.60).

Each item names where it lives in Ray; tests/distributed/test_ray_internals.py compares them with the installed Ray
and fails loudly when an upgrade moves one, instead of a run silently resuming, leaking logs or racing a kill.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pyarrow.fs as pafs

from nnunet_ray.data import storage
from nnunet_ray.runs.checkpoint import epoch_dir_name

# ray/train/v2/_internal/constants.py::CHECKPOINT_MANAGER_SNAPSHOT_FILENAME: the controller writes it into
# <storage_path>/<name>/ when the first checkpoint is registered and restores from it when a run of that name
# starts again, so its presence is what "a run of this name exists (and would be resumed)" means.
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
# ray/train/v2/_internal/constants.py::DEFAULT_HEALTH_CHECK_INTERVAL_S (env RAY_TRAIN_HEALTH_CHECK_INTERVAL_S):
# how often the controller polls workers; a report made less than one poll before a worker dies can be lost.
RAY_HEALTH_CHECK_INTERVAL_S = 2.0
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# What experiments set (``poll_workers_often``): polling every 0.5 s instead of 2 s cuts seconds from every
# Ray Train trial's start and teardown.
HEALTH_CHECK_INTERVAL_S = 0.5
# Test-only fault injection waits this long before killing a worker, so the previous epoch's checkpoint is
# registered first: longer than one health-check poll at Ray's default, the longer of the two.
KILL_DELAY_S = RAY_HEALTH_CHECK_INTERVAL_S + 1.0
# ray/train/v2/_internal/execution/context.py logs every ray.train.report (with all metrics) at INFO under a
# logger named by its file path, outside the "ray.train" hierarchy that LoggingConfig controls.
REPORT_LOGGER_MODULE = "ray.train.v2._internal.execution.context"


def poll_workers_often() -> None:
    """Ray Train controllers started from this process poll their workers every ``HEALTH_CHECK_INTERVAL_S``
    (unless the environment already sets the interval)."""
    os.environ.setdefault(HEALTH_CHECK_ENV, str(HEALTH_CHECK_INTERVAL_S))


def run_exists(run_dir: str | Path) -> bool:
    """Whether Ray Train holds a checkpoint snapshot for this run folder, a path or a URI (a new fit would resume
    it)."""
    return storage.is_file(storage.join(run_dir, SNAPSHOT_FILE))


def quiet_report_logs() -> None:
    """Silence Ray Train's per-report INFO lines in this worker (rank 0's progress line already says the same)."""
    import importlib

    try:
        module = importlib.import_module(REPORT_LOGGER_MODULE)
    except ImportError:  # another Ray version; test_ray_internals fails for it, a run only gets noisier logs
        return
    logging.getLogger(module.__file__).setLevel(logging.WARNING)


# ray/train/_internal/storage.py::StorageContext: a Tune function trainable's session (ray/train/_internal/session.py
# ::_TrainSession.report) calls ``storage._update_checkpoint_index(metrics)`` and then persists the checkpoint to
# ``storage.checkpoint_dir_name`` (``checkpoint_NNNNNN``); Ray's comment on that hook says it "can be overwritten to
# customize checkpoint directories", and ``tune.report`` takes no ``checkpoint_dir_name`` (only Train V2's does).
# It also logs "Checkpoint successfully created at ..." at INFO for every checkpoint, from the trial's process.
STORAGE_LOGGER = "ray.train._internal.storage"


def name_trial_checkpoints_by_epoch() -> None:
    """In a Tune function trainable: persist each checkpoint it reports as ``epoch_NNNN`` (the reported metrics'
    ``epoch``), the layout Ray Train runs have, instead of Tune's ``checkpoint_NNNNNN``; without a log line per
    checkpoint (rank 0's epoch line says it); on object storage uploaded file by file, each checked."""
    from ray.train._internal.session import get_session

    logging.getLogger(STORAGE_LOGGER).setLevel(logging.WARNING)
    session = get_session()
    assert session is not None, "called inside a Tune trainable, which has a session"
    session_storage = session.storage
    if not isinstance(session_storage, _EpochNamedStorage):
        session_storage.__class__ = _EpochNamedStorage


def _epoch_named_storage_class() -> type:
    from ray.train._internal.storage import StorageContext

    class EpochNamedStorage(StorageContext):
        def _update_checkpoint_index(self, metrics: dict) -> None:
            self.current_checkpoint_index = int(metrics["epoch"])

        @property
        def checkpoint_dir_name(self) -> str:
            return epoch_dir_name(self.current_checkpoint_index)

        def persist_current_checkpoint(self, checkpoint):  # Ray's signature: a ray.train Checkpoint in and out
            # On object storage through storage.upload_to: Ray's copy (pyarrow.fs.copy_files) ignores a failed
            # upload and Tune registers a checkpoint without its files; this raises StorageError naming the object
            # before anything is registered, so the trial restarts from the last whole checkpoint.
            if isinstance(self.storage_filesystem, pafs.LocalFileSystem):
                return super().persist_current_checkpoint(checkpoint)
            storage.upload_to(checkpoint.path, self.storage_filesystem, self.checkpoint_fs_path)
            return checkpoint.__class__(filesystem=self.storage_filesystem, path=self.checkpoint_fs_path)

    return EpochNamedStorage


_EpochNamedStorage = _epoch_named_storage_class()


# ray/_private/authentication/authentication_token_setup.py logs the notice that a new local cluster has token
# authentication on (its secure default) at WARNING under this module's name.
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"

# Ray Data's progress-bar module, which warns once that bars are off when they were turned off on purpose.
DATA_PROGRESS_LOGGER = "ray.data._internal.progress"

# The signal Ray Tune always answers with its graceful stop (save the experiment, end the trials, return from fit):
# ray/tune/tune.py ``_setup_signal_catching`` registers it next to SIGINT, whose handler TUNE_DISABLE_SIGINT_HANDLER
# turns off.
TUNE_GRACEFUL_STOP_SIGNAL = signal.SIGUSR1


def worker_log_dispatcher():
    """Ray's driver-side dispatcher of forwarded worker logs (ray/_private/ray_logging.py), or None if it moved."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher
    except ImportError:
        return None
    return global_worker_stdstream_dispatcher


# Tune's own lines around a stop signal, by the module that logs them (``logging.getLogger(__name__)`` there).
TUNE_STOP_NOISE = {
    "ray.tune.tune": ("Stop signal received", "Experiment has been interrupted", "Training has been interrupted"),
    "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics",),
}


class _TuneStopNoise(logging.Filter):
    """Drops Tune's own lines around a stop signal: they point at its Python API (``Tuner.restore``) and list trials
    without results, where the command prints one line with the CLI's way to continue (``run_tuner``)."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_tune_stop_noise() -> None:
    """Filter Tune's stop-signal lines out of its loggers, once per process."""
    for name, starts in TUNE_STOP_NOISE.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _TuneStopNoise) for f in target.filters):
            target.addFilter(_TuneStopNoise(starts))
