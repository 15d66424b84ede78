"""``summary.json``: how a training run ended, where its checkpoints are, and what it cost. Written once per run by
the Ray layer when the run ends; read by cv's table, a restored experiment, the benchmarks and the job harness.

Version 1 files (before the ``version`` key) read as version 1; a newer version is refused with the file named.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_ray.data import storage
from nnunet_ray.data.records import RecordError, check_record, read_record

SUMMARY_FILE = "summary.json"
SUMMARY_VERSION = 1



@dataclass(frozen=True)
class RunSummary:
    """One training run's ``summary.json``.

    Attributes:
        name, run_dir: the run's name and folder (path or URI).
        best_checkpoint, last_checkpoint: checkpoint folders (None when none was kept).
        engine: ``"tune"`` (trained inside the Tune trial) or ``"train"`` (Ray Train workers).
        best_dice, best_epoch: early stopping's best validation mean Dice and its epoch (None: never validated).
        epochs, start_epoch: epochs done in total, and the epoch this attempt started at (a resume's > 0).
        stopped_early, stop_reason: whether and why training ended before ``--max-epochs``.
        metrics, tensorboard: the run's ``metrics.jsonl`` and TensorBoard folder.
        seconds: the run's wall on its driver; seconds_in_worker: inside ``fit`` (rank 0).
        started_at, finished_at: Unix times.
        device, devices, device_hours: what the run held (``"GPU"`` / ``"CPU"``, how many, for how long).
        node_id: the Ray node that trained the last attempt, where one process trained it.
        splits_hash: the folds the run trained on (``data.folds.splits_hash``).
    """

    name: str
    run_dir: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    # Later versions of the file added the rest one by one: an older file reads with these defaults.
    engine: str = "train"
    best_dice: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    start_epoch: int | None = None
    stopped_early: bool | None = None
    stop_reason: str | None = None
    metrics: str = ""
    tensorboard: str = ""
    seconds: float = 0.0
    seconds_in_worker: float | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    device: str = "CPU"
    devices: float = 0.0
    device_hours: float = 0.0
    node_id: str | None = None
    splits_hash: str | None = None
    version: int = SUMMARY_VERSION

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, *, source: str = SUMMARY_FILE) -> RunSummary:
        """The summary in ``data`` (a parsed summary.json); keys this version does not know are ignored.

        Raises:
            RecordError: not an object, a required key missing, or a newer version.
        """
        data = check_record(data, current=SUMMARY_VERSION, source=source, what="run summary")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise RecordError(f"{source}: not a run summary (missing {', '.join(missing)})")
        return cls(**{**{n: v for n, v in data.items() if n in fields}, "version": SUMMARY_VERSION})


def summary_location(run_dir: str | Path) -> str:
    """A run folder's summary.json (path or URI)."""
    return storage.join(run_dir, SUMMARY_FILE)


def save_summary(run_dir: str | Path, summary: RunSummary) -> None:
    """Write ``<run_dir>/summary.json`` (path or URI) atomically."""
    storage.write_json(summary_location(run_dir), summary.to_json())


def load_summary(run_dir: str | Path) -> RunSummary:
    """Read ``<run_dir>/summary.json`` (path or URI).

    Raises:
        FileNotFoundError: the run has no summary (it has not finished).
        RecordError: the file is not a valid summary (as ``RunSummary.from_json``).
    """
    data, source = read_record(summary_location(run_dir))
    return RunSummary.from_json(data, source=source)


def run_summaries(root: str | Path, *, recursive: bool = False) -> list[RunSummary]:
    """The summaries of the finished runs directly under ``root`` (a local experiment folder), or anywhere below it
    with ``recursive``; by path. An evaluation's ``summary.json`` (a prediction folder's scores: same file name, no
    run in it) is passed over."""
    found = []
    for path in sorted(Path(root).glob(f"{'**' if recursive else '*'}/{SUMMARY_FILE}")):
        try:
            found.append(load_summary(path.parent))
        except RecordError:
            continue
    return found
