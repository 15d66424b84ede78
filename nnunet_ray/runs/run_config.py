"""A checkpoint's ``config.json``: the options its run trained with (a ``TrainConfig``) and the folds it trained on.

Written with every checkpoint (``checkpoint.save_checkpoint``) and stamped with the run's ``splits_hash`` before
the engine keeps the checkpoint; read to rebuild the network, to refuse a resume with other options or folds, to
check that ensemble members come from one cross-validation, and to find a cv run's validation cases.

The file is ``asdict(TrainConfig)`` plus ``splits_hash`` and ``version``, flat, so it reads as the run's flags. A
file from before the ``version`` key reads as version 1, and options a later version added take their defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_ray.config import ConfigError, TrainConfig
from nnunet_ray.config.base import from_dict
from nnunet_ray.data.records import RecordError, check_record, read_record

CONFIG_FILE = "config.json"
SPLITS_HASH_KEY = "splits_hash"  # next to the TrainConfig fields: the folds the run trained on
RUN_CONFIG_VERSION = 1


class CheckpointError(FileNotFoundError):
    """A checkpoint directory is missing or incomplete; the message names the directory and the file. (Here, not
    in ``checkpoint.py``, so the CLI can catch it without importing torch.)"""


@dataclass(frozen=True)
class RunConfig:
    """One checkpoint's ``config.json``.

    Attributes:
        train: the run's options, resolved (``--recipe`` applied).
        splits_hash: ``data.folds.splits_hash`` of the folds it trained on (None: recorded before the hash existed,
            or trained without a splits.json).
    """

    train: TrainConfig
    splits_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        stamp = {SPLITS_HASH_KEY: self.splits_hash} if self.splits_hash is not None else {}
        return {**dataclasses.asdict(self.train), **stamp, "version": RUN_CONFIG_VERSION}

    @classmethod
    def from_json(cls, data: Any, *, source: str = CONFIG_FILE) -> RunConfig:
        """The record in ``data`` (a parsed config.json); keys this version does not know are ignored.

        Raises:
            RecordError: not an object, a newer version, or options this version refuses (each names ``source``).
        """
        values = check_record(data, current=RUN_CONFIG_VERSION, source=source, what="run config")
        try:
            # The checks the run passed when it started: a value they refuse is a file edited or damaged since.
            train = from_dict(TrainConfig, {k: v for k, v in values.items() if k != "version"}).validate()
        except (ConfigError, TypeError) as err:
            raise RecordError(f"{source}: not a run config this nnunet_ray reads ({err})") from err
        stamp = values.get(SPLITS_HASH_KEY)
        return cls(train=train, splits_hash=str(stamp) if stamp else None)


def load_run_config(directory: str | Path) -> RunConfig:
    """``<directory>/config.json`` (a checkpoint folder).

    Raises:
        FileNotFoundError: there is none.
        RecordError: it is not JSON or not a run config, naming the file.
    """
    data, source = read_record(Path(directory) / CONFIG_FILE)
    return RunConfig.from_json(data, source=source)


def save_run_config(directory: str | Path, config: RunConfig) -> Path:
    """Write ``<directory>/config.json``; returns its path."""
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(config.to_json(), indent=1))
    return path


def record_splits_hash(directory: str | Path, splits_hash: str | None) -> None:
    """Stamp a checkpoint's config.json with the folds its run trained on (nothing when ``splits_hash`` is None)."""
    if splits_hash is not None:
        save_run_config(directory, dataclasses.replace(load_run_config(directory), splits_hash=splits_hash))
