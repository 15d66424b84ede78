"""What a preprocessed case was made from: a fingerprint of its raw input files, kept in ``<case>.json``.

Each file is recorded as ``{"role": "image0" | ... | "label", "name", "size", "mtime_ns", "sha256"}``. A rerun checks
it the way git's index and rsync's quick check do: the same size and modification time -> unchanged, nothing read;
another size or a missing file -> changed; the same size with another time -> the content hash decides (and the
record takes the new time, so the next rerun is a stat again). Neither half alone would do:

- size + mtime alone calls a file changed whenever it is copied without its times (``cp -r``, a new disk) and on
  every node that stages an ``s3://`` raw root (each download carries its own times), so whole datasets would be
  redone for nothing;
- a content hash alone reads the whole raw dataset on every rerun: a few MB on the 10-case synthetic task, hundreds
  of GB (minutes over NFS) on a 1,000-case CT task, where one stat per file takes seconds.

The hash is taken when the case is preprocessed (sha256, ~1.5 GB/s with SHA-NI; the reader reads the same bytes
next, from the page cache), a few ms per case. The blind spot, shared with rsync: a different file with the same
size and exactly the same ``mtime_ns`` (``cp -p`` / ``rsync -a`` of another file carrying the very same timestamp).
Cases written before this record existed have none; they count as unchanged (nothing forces a dataset to be redone).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from nnunet_ray.data.types import CaseError, CaseFiles

UNCHANGED, CHANGED, UNRECORDED = "unchanged", "changed", "unrecorded"


def _roles(case: CaseFiles) -> list[tuple[str, Path]]:
    files = [(f"image{i}", Path(p)) for i, p in enumerate(case.images)]
    return files + ([("label", Path(case.label))] if case.label is not None else [])


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def raw_file_records(case: CaseFiles) -> list[dict]:
    """The fingerprint of ``case``'s files (its label only when it has one), to store in ``<case>.json``.

    Each file is stat'ed before it is hashed: a file rewritten in between then shows another time on the next
    check and is hashed again, never trusted.

    Raises:
        CaseError: a file is missing or cannot be read, naming it.
    """
    records = []
    for role, path in _roles(case):
        try:
            stat = path.stat()
            records.append({"role": role, "name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                            "sha256": _digest(path)})
        except OSError as err:
            raise CaseError(case.case_id, f"cannot read {role} file {path}: {err.strerror or err}") from err
    return records


def check_raw_files(recorded: list[dict] | None, case: CaseFiles) -> tuple[str, list[dict] | None]:
    """Whether ``case``'s raw files are still the ones ``recorded`` describes.

    Args:
        recorded: the ``raw_files`` list of ``<case>.json``, or None when the case was written without one.
        case: the case's files now (label None when the mode ignores it).

    Returns:
        (``UNCHANGED`` | ``CHANGED`` | ``UNRECORDED``, the record with today's times when only times moved and the
        content is the same (store it, so the next check needs no read), else None).
    """
    if recorded is None:
        return UNRECORDED, None
    current = _roles(case)
    if [(r.get("role"), r.get("name")) for r in recorded] != [(role, path.name) for role, path in current]:
        return CHANGED, None
    refreshed, moved = [], False
    for record, (_, path) in zip(recorded, current):
        try:
            stat = path.stat()
            if stat.st_size != record.get("size"):
                return CHANGED, None
            if stat.st_mtime_ns != record.get("mtime_ns"):
                if _digest(path) != record.get("sha256"):
                    return CHANGED, None
                moved = True
        except OSError:  # gone or unreadable: preprocessing it again reports why
            return CHANGED, None
        refreshed.append({**record, "mtime_ns": stat.st_mtime_ns})
    return UNCHANGED, (refreshed if moved else None)
