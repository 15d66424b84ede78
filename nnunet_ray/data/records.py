"""What every versioned JSON record checks first (a run's ``summary.json`` and ``config.json``,
``best_configuration.json``, ``experiment.json``, a preprocessed ``<case>.json``): an object, of a version this
nnunet_ray reads. A file from before the ``version`` key reads as version 1."""

from __future__ import annotations

from typing import Any


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
