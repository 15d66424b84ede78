"""Preprocessing one case into a folder that may be a URI (``s3://``, ``gs://``): the function Ray Data maps.

``preprocess_case`` reads and writes local files; for a URI the case is preprocessed into node-local scratch and
uploaded, the ``.json`` that marks a case done last, so a reader never sees a half case.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path
from typing import Callable

from nnunet_ray.data import storage
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.planning.schema import Plans
from nnunet_ray.preprocessing.case import preprocess_case


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
