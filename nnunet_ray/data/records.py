"""What every versioned JSON record checks first (a run's ``summary.json`` and ``config.json``,
``best_configuration.json``, ``experiment.json``, a preprocessed ``<case>.json``): an object, of a version this
nnunet_ray reads. A file from before the ``version`` key reads as version 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nnunet_ray.data import storage


class RecordError(ValueError):
    """A record file is malformed, misses a key, or is newer than this version reads; the message names the file."""


def check_record(data: Any, *, current: int, source: str, what: str) -> dict[str, Any]:
    """``data`` (a parsed file) as a dict, once it is an object of version ``current`` or older.

    Raises:
        RecordError: naming ``source``: not a JSON object, or a newer version.
    """
    if not isinstance(data, dict):
        raise RecordError(f"{source}: not a {what} (expected a JSON object)")
    version = data.get("version", 1)
    if not isinstance(version, int) or version > current:
        raise RecordError(f"{source}: version {version!r} is newer than this nnunet_ray reads ({current}); "
                    "upgrade nnunet_ray")
    return data


def read_record(location: str | Path, *, advice: str = "") -> tuple[Any, str]:
    """The parsed JSON of the record at ``location`` (a path or URI), and the name errors give it.

    Args:
        advice: appended to the error (e.g. "; run preprocess again").

    Raises:
        FileNotFoundError: there is none.
        RecordError: it is not JSON, naming it.
    """
    source = storage.display(location)
    text = storage.read_text(location)
    try:
        return json.loads(text), source
    except json.JSONDecodeError as err:
        raise RecordError(f"{source}: not JSON ({err}){advice}") from err

