"""Atomic file writes: a file appears complete or not at all, so a killed run never leaves a half file.

Every writer in the project goes through ``atomic_path``: write to a temporary name in the same folder, then
``os.replace`` onto the real name. The temporary name is ``.tmp.<pid>.<random>.<name>``: it ends with the real
name, so suffix-sniffing writers (nibabel's ``.nii.gz``) behave, and ``leftover_temporaries`` finds what a killed
process left behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed onto ``path``, on error removed.

    Args:
        path: the final file; its folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid + random part: concurrent writers of the same file each finish, the last rename wins.
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}.{uuid.uuid4().hex[:8]}.{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def leftover_temporaries(path: str | Path) -> list[Path]:
    """Temporary files of ``path`` left by any process (e.g. one killed mid-write)."""
    path = Path(path)
    pattern = os.path.join(glob.escape(str(path.parent)), f"{glob.escape(TMP_PREFIX)}*.{glob.escape(path.name)}")
    return [Path(p) for p in glob.glob(pattern)]


def save_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (plus a newline) atomically; the folder is created if missing."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent) + "\n", encoding="utf-8")


def save_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically; the folder is created if missing."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
