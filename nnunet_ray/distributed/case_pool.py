"""Run a per-case function over a dataset's cases on Ray Data actors, once per case, surviving dead workers.

Each case is one row (one block) handed to a pool of ``CaseMapper`` actors; the pool reserves the memory the largest
case needs and grows with the cluster (Ray Data's autoscaling actor pool). The per-case functions
(``case_fingerprint``, ``preprocess_case``) never raise for a bad case, they return an ``error``, so one corrupt file
never aborts the dataset. A worker process that dies mid-case (killed, out of memory, its node lost) does abort Ray
Data's run: ``map_cases_retrying`` then runs the cases without a record again on a new pool, up to ``CASE_ATTEMPTS``
times (the functions are idempotent: a written case is skipped). ``case_memory_bytes`` / ``raw_case_memory_bytes``
size a preprocessing / fingerprinting actor from the dataset fingerprint / the NIfTI headers.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import ray
import ray.data
import ray.exceptions

from nnunet_ray.config import RunError
from nnunet_ray.data.nifti import read_header
from nnunet_ray.data.staging import RawData
from nnunet_ray.data.types import CaseFiles, DatasetInfo
from nnunet_ray.distributed.cluster import can_reserve_memory, cluster_cpus, node_memory
from nnunet_ray.planning.fingerprint import DatasetFingerprint
from nnunet_ray.planning.schema import Plans

logger = logging.getLogger(__name__)

BASE_MEMORY = 768 * 1024**2  # bytes: an actor's interpreter with numpy, scipy, nibabel and torch imported
WORKING_COPIES = 6  # float64 copies of a resampled case alive at once (zoom input/output, normalised, padded)
FINGERPRINT_COPIES = 2  # a raw case read as float64, plus the nonzero / foreground masks and samples
CASE_ATTEMPTS = 3  # runs over the unfinished cases when case workers die; a written case is skipped, not redone
# How Ray reports a worker process lost mid-case: killed (SIGKILL, the OOM killer), crashed, or gone with its node.
WORKER_LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
               ray.exceptions.ObjectLostError)


def _case_to_row(case: CaseFiles, root: Path) -> dict[str, Any]:
    # Arrow rows: plain strings only ("" = no label) so blocks of train and test cases share one schema. Paths are
    # relative to the dataset folder: a staged copy sits in a different folder on each node.
    return {"case_id": case.case_id, "images": [str(p.relative_to(root)) for p in case.images],
            "label": str(case.label.relative_to(root)) if case.label else ""}


def _row_to_case(row: dict[str, Any], root: Path) -> CaseFiles:
    return CaseFiles(case_id=row["case_id"], images=tuple(root / p for p in row["images"]),
                     label=root / row["label"] if row["label"] else None)


class CaseMapper:
    """Ray Data actor applying a per-case function to rows.

    Actors rather than tasks: each actor imports the stack once and keeps a few rows queued, so a worker never
    idles between cases (per-task scheduling left ~30 % of two CPUs idle on sub-second cases).
    ``faults`` is test-only: ``{"kill_case": case_id, "kill_marker": path}`` kills this worker process for real
    (``os._exit``) when it starts that case, once (the marker file records it).
    """

    def __init__(self, fn: Callable[[CaseFiles], dict], raw: RawData, faults: dict | None = None):
        self.fn = fn
        self.root = raw.local_root()  # a raw dataset on a URI: staged once per node
        self.faults = faults or {}

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        marker = self.faults.get("kill_marker")
        if marker and row["case_id"] == self.faults.get("kill_case") and not Path(marker).exists():
            Path(marker).write_text(f"killed the worker preprocessing {row['case_id']} (pid {os.getpid()})\n")
            os._exit(1)
        record = self.fn(_row_to_case(row, self.root))
        return {k: ("" if v is None else v) for k, v in record.items()}


def actor_pool(num_workers: int, n_cases: int, memory: int | None = None) -> ray.data.ActorPoolStrategy:
    """A fixed pool of ``num_workers`` actors, or (0) one that grows with the cluster.

    The autoscaling pool starts with as many actors as the cluster's CPUs and memory hold now, and grows up to one
    actor per case: Ray Data adds actors while cases wait and the cluster (or its autoscaler) has room for them,
    so nodes that join mid-run are used.
    """
    cases = max(1, n_cases)
    if num_workers:
        return ray.data.ActorPoolStrategy(size=min(num_workers, cases))
    fit = sum(m // memory for m in node_memory()) if memory else cases
    initial = max(1, min(cluster_cpus(), fit, cases))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(cases, initial), initial_size=initial)


def map_cases(dataset: DatasetInfo, raw: RawData, cases: tuple[CaseFiles, ...], fn: Callable[[CaseFiles], dict], *,
              num_workers: int, memory: int | None = None, faults: dict | None = None) -> Iterator[dict[str, Any]]:
    """Run ``fn`` on every case with Ray Data, one case per block, each actor reserving ``memory`` bytes.

    ``memory`` is capped at the largest node's, so a huge estimate still runs (one actor per node) instead of
    waiting forever for a node that does not exist.
    """
    if memory and not can_reserve_memory():
        memory = None
    if memory:
        memory = min(memory, max(node_memory(), default=memory))
    rows = ray.data.from_items([_case_to_row(c, dataset.root) for c in cases], override_num_blocks=max(1, len(cases)))
    # max_restarts=0: Ray Data passes its actors' constructor arguments through the object store, and Ray logs an
    # error line per actor when such an actor may restart, because its restart would fail if they were lost
    # (ray-project/ray#53727). A crashed case worker aborts this run instead, and map_cases_retrying runs the
    # unfinished cases again (a bounded number of times, where Ray's own retries would be unbounded).
    # Ray 2.60 has no named parameter for it yet (the kwargs route is deprecated for 2.64; Ray is pinned < 2.61).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        # Ray types map's fn as a function only; a callable class (with fn_constructor_args) is its documented form.
        mapped = rows.map(CaseMapper, fn_constructor_args=(fn, raw, faults),  # type: ignore[arg-type]
                          num_cpus=1, memory=memory, max_restarts=0,
                          compute=actor_pool(num_workers, len(cases), memory))
    yield from mapped.iter_rows()


def map_cases_retrying(dataset: DatasetInfo, raw: RawData, cases: tuple[CaseFiles, ...],
                       fn: Callable[[CaseFiles], dict], *, num_workers: int, memory: int | None = None,
                       faults: dict | None = None) -> Iterator[dict[str, Any]]:
    """``map_cases``, run again over the cases without a record when a case worker dies, up to ``CASE_ATTEMPTS``.

    Safe because the per-case functions are idempotent: a case written before the worker died is skipped, a half
    written one (temporary files, no ``.json``) is redone.

    Raises:
        RunError: workers died in every attempt; the cases finished so far are kept.
    """
    remaining = {case.case_id: case for case in cases}
    for attempt in range(1, CASE_ATTEMPTS + 1):
        try:
            for record in map_cases(dataset, raw, tuple(remaining.values()), fn, num_workers=num_workers,
                                    memory=memory, faults=faults):
                remaining.pop(record["case_id"], None)
                yield record
            return
        except WORKER_LOST as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if attempt == CASE_ATTEMPTS:
                raise RunError(f"case workers died in {attempt} attempt(s) (last: {reason}); {len(remaining)} of "
                               f"{len(cases)} cases unfinished, the others are kept: rerun to continue") from err
            logger.warning("a case worker died (%s); running the %d unfinished cases again (attempt %d of %d)",
                           reason, len(remaining), attempt + 1, CASE_ATTEMPTS)


def raw_case_memory_bytes(cases: tuple[CaseFiles, ...]) -> int:
    """Memory one fingerprinting actor needs for the largest raw case, from the NIfTI headers (no voxels read).

    A case is read at its own resolution: every channel and the label as float64, plus a foreground mask.
    A header that cannot be read counts as nothing here: fingerprinting then reports that case on one line.
    """
    largest = 0.0
    for case in cases:
        files = (*case.images, *((case.label,) if case.label else ()))
        try:
            largest = max(largest, sum(float(np.prod(read_header(f).get_data_shape())) for f in files))
        except Exception:  # noqa: BLE001 - the case's own error is reported by the fingerprint itself
            continue
    return int(BASE_MEMORY + largest * 8 * FINGERPRINT_COPIES)


def case_memory_bytes(fingerprint: DatasetFingerprint | None, plans: Plans) -> int:
    """Memory one preprocessing actor needs for the largest case: its resampled size times the working copies.

    Args:
        fingerprint: the dataset's fingerprint (per-case ``shapes`` and ``spacings``), or None when unknown.
        plans: the plans (target ``spacing``, ``dim``, ``in_channels``).

    Returns:
        Bytes to reserve per actor (Ray schedules actors only where that much memory is free).
    """
    if fingerprint is None or not fingerprint.shapes:
        return BASE_MEMORY * 2
    shapes = np.asarray(fingerprint.shapes, dtype=np.float64)  # (cases, 3) voxels (z, y, x)
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)  # (cases, 3) mm
    target = np.asarray(plans.spacing, dtype=np.float64)
    if plans.dim == 2:  # 2D keeps each case's own z spacing
        target = np.column_stack([spacings[:, 0], np.broadcast_to(target[1:], (len(spacings), 2))])
    voxels = float(np.max(np.prod(np.maximum(shapes * spacings / target, shapes), axis=1)))
    channels = plans.in_channels + 1  # + the label
    return int(BASE_MEMORY + voxels * channels * 8 * WORKING_COPIES)
