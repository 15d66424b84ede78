"""Planning and preprocessing on Ray Data: cases are sharded over every CPU of the cluster.

    nnunet-ray plan --data RAW_DIR --dim 3 --results PRE_ROOT
    nnunet-ray preprocess --data RAW_DIR --results PRE_ROOT --dim 3
    nnunet-ray preprocess --data /mnt/shared/Task04_Hippocampus --results s3://bucket/pre --dim 3

The results root may be a shared path or a URI: every actor writes there, wherever it runs (``locations``), and a
probe checks first that every node reads ``--data`` and writes ``--results``. Actors reserve the memory the largest
case needs, and the pool grows with the cluster (Ray Data's autoscaling actor pool) instead of being sized by the CPUs
present when the call starts.
Each case is one row; the pure per-case functions (``case_fingerprint``, ``preprocess_case``) never raise for a
bad case, they return an ``error``, so one corrupt file never aborts the dataset (Ray Data would otherwise fail the
whole run, or silently drop the block with ``max_errored_blocks``).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
import ray.data

from nnunet_ray.config import ConfigError, PlanConfig, PreprocessConfig
from nnunet_ray.data import storage
from nnunet_ray.data.folds import import_splits, kfold_splits, sorted_case_ids
from nnunet_ray.data.types import CaseFiles, DatasetInfo
from nnunet_ray.distributed.cluster import can_reserve_memory, cluster_cpus, init_ray, node_memory
from nnunet_ray.distributed.locations import (FINGERPRINT_FILE, RawData, case_memory_bytes, case_writer,
                                              open_raw_dataset, raw_case_memory_bytes, read_plans, write_plans,
                                              write_splits)
from nnunet_ray.distributed.probe import probe_storage
from nnunet_ray.planning.fingerprint import case_fingerprint, merge_fingerprints
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import Plans, PlansNotFoundError

logger = logging.getLogger(__name__)


@dataclass
class PreprocessSummary:
    """What one preprocessing run did; ``failed`` maps case id to its one-line error."""

    out_dir: Path | str  # a str when the results root is a URI
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (f"{len(self.done)} preprocessed, {len(self.skipped)} already done, {len(self.failed)} failed "
                f"in {self.seconds:.1f} s -> {storage.display(self.out_dir)}")


def _case_to_row(case: CaseFiles, root: Path) -> dict[str, Any]:
    # Arrow rows: plain strings only ("" = no label) so blocks of train and test cases share one schema. Paths are
    # relative to the dataset folder: a staged copy sits in a different folder on each node.
    return {"case_id": case.case_id, "images": [str(p.relative_to(root)) for p in case.images],
            "label": str(case.label.relative_to(root)) if case.label else ""}


def _row_to_case(row: dict[str, Any], root: Path) -> CaseFiles:
    return CaseFiles(case_id=row["case_id"], images=tuple(root / p for p in row["images"]),
                     label=root / row["label"] if row["label"] else None)


class _CaseMapper:
    """Ray Data actor applying a per-case function to rows.

    Actors rather than tasks: each actor imports the stack once and keeps a few rows queued, so a worker never
    idles between cases (per-task scheduling left ~30 % of two CPUs idle on sub-second cases).
    """

    def __init__(self, fn: Callable[[CaseFiles], dict], raw: RawData):
        self.fn = fn
        self.root = raw.local_root()  # a raw dataset on a URI: staged once per node

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
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


def _map_cases(dataset: DatasetInfo, raw: RawData, cases: tuple[CaseFiles, ...], fn: Callable[[CaseFiles], dict], *,
               num_workers: int, memory: int | None = None) -> Iterator[dict[str, Any]]:
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
    # (ray-project/ray#53727). A crashed case worker fails the run instead; a rerun skips the finished cases.
    # Ray 2.60 has no named parameter for it yet (the kwargs route is deprecated for 2.64; Ray is pinned < 2.61).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        mapped = rows.map(_CaseMapper, fn_constructor_args=(fn, raw), num_cpus=1, memory=memory, max_restarts=0,
                          compute=actor_pool(num_workers, len(cases), memory))
    yield from mapped.iter_rows()


def output_dir(results: str, dataset: DatasetInfo, dim: int, exec_mode: str = "training") -> str:
    """``RESULTS/<dataset>/<dim>d`` for training cases, ``.../val`` or ``.../test`` for the others (path or URI)."""
    base = storage.join(storage.absolute(results), dataset.name, f"{dim}d")
    return base if exec_mode == "training" else storage.join(base, exec_mode)


def _probe(data: str, results: str) -> None:
    """Every node must read the raw dataset.json and write (and see the driver's writes in) the results root."""
    probe_storage(readable={"data": storage.join(storage.absolute(data), "dataset.json")},
                  results=storage.absolute(results))


def plan_dataset(cfg: PlanConfig) -> Plans:
    """Fingerprint every training case on Ray Data and derive plans.json (written when ``cfg.results`` is set).

    Returns:
        The plans.
    """
    cfg.validate()
    dataset, raw = open_raw_dataset(cfg.data)
    init_ray(cfg.address)
    if cfg.results:
        _probe(cfg.data, cfg.results)
    memory = raw_case_memory_bytes(dataset.training)  # this node's copy: the driver's staged or shared folder
    records = list(_map_cases(dataset, raw, dataset.training, case_fingerprint, num_workers=0, memory=memory))
    for record in records:
        if record.get("error"):
            logger.warning("%s (left out of the fingerprint)", record["error"])
    fingerprint = merge_fingerprints(dataset, records)  # a failed case's "error" is non-empty
    plans = make_plans(dataset, fingerprint, dim=cfg.dim, min_fmap=cfg.min_fmap, max_depth=cfg.max_depth,
                       memory_budget_mvox=cfg.memory_budget_mvox)
    if cfg.results:
        out = output_dir(cfg.results, dataset, cfg.dim)
        storage.write_json(storage.join(out, FINGERPRINT_FILE), fingerprint)
        write_plans(out, plans)
    return plans


def _ensure_plans(cfg: PreprocessConfig, dataset: DatasetInfo) -> Plans:
    plans_dir = output_dir(cfg.results, dataset, cfg.dim)
    try:  # reuse: a rerun must keep the hash the finished cases were written with
        plans = read_plans(plans_dir)
    except PlansNotFoundError:
        logger.info("planning %s (%dd) ...", dataset.name, cfg.dim)
        return plan_dataset(PlanConfig(data=cfg.data, results=cfg.results, dim=cfg.dim, min_fmap=cfg.min_fmap,
                                       max_depth=cfg.max_depth, address=cfg.address))
    write_plans(plans_dir, plans)  # the same content, in the current format when the file was older
    return plans


def preprocess_dataset(cfg: PreprocessConfig) -> PreprocessSummary:
    """Plan if needed, then preprocess every case of ``cfg.exec_mode`` in parallel; write splits.json.

    A bad case is reported on one line and left out; every other case is still written.
    """
    cfg.validate()
    dataset, raw = open_raw_dataset(cfg.data)
    imported = _imported_splits(cfg, dataset)  # a bad splits file fails before any planning or case work
    plans = _ensure_plans(cfg, dataset)  # existing plans are read (and a bad file refused) before Ray starts
    init_ray(cfg.address)
    _probe(cfg.data, cfg.results)
    out = output_dir(cfg.results, dataset, cfg.dim, cfg.exec_mode)
    cases = dataset.test if cfg.exec_mode == "test" else dataset.training
    summary = PreprocessSummary(out_dir=out if storage.is_uri(out) else Path(out))
    start = time.perf_counter()
    memory = case_memory_bytes(_read_fingerprint(cfg, dataset), plans)
    run = case_writer(plans, out, cfg.exec_mode)
    mapped = _map_cases(dataset, raw, cases, run, num_workers=cfg.case_workers, memory=memory)
    for index, record in enumerate(mapped, start=1):
        _record(summary, record)
        if record["status"] != "failed":
            logger.info("  [%d/%d] %s %s (%.1f s)", index, len(cases), record["case_id"], record["status"],
                        record["seconds"])
    summary.seconds = time.perf_counter() - start
    if imported is not None:
        write_splits(out, imported)
    elif cfg.exec_mode == "training":
        _write_splits(out, summary, cfg.nfolds)
    return summary


def _imported_splits(cfg: PreprocessConfig, dataset: DatasetInfo) -> list[dict[str, list[str]]] | None:
    """``--splits``: the folds from the file, checked against the dataset's training cases; None without it."""
    if not cfg.splits:
        return None
    try:
        return import_splits(Path(cfg.splits).expanduser(), [case.case_id for case in dataset.training])
    except (OSError, ValueError) as err:
        raise ConfigError(f"--splits: {err}") from err


def _record(summary: PreprocessSummary, record: dict[str, Any]) -> None:
    status, case_id = record["status"], record["case_id"]
    if status == "failed":
        summary.failed[case_id] = record["error"]
        logger.error("%s", record["error"])
    else:
        (summary.done if status == "done" else summary.skipped).append(case_id)


def _read_fingerprint(cfg: PreprocessConfig, dataset: DatasetInfo) -> dict | None:
    try:
        return storage.read_json(storage.join(output_dir(cfg.results, dataset, cfg.dim), FINGERPRINT_FILE))
    except (OSError, ValueError):  # plans written by hand or by an older version: size actors by default
        return None


def _write_splits(out: str, summary: PreprocessSummary, nfolds: int) -> None:
    # Folds over the cases that are actually on disk, ordered as the reference's sorted(glob("*_x.npy")).
    case_ids = sorted_case_ids(summary.done + summary.skipped)
    if len(case_ids) < nfolds:
        logger.warning("%d cases for %d folds; writing %d folds", len(case_ids), nfolds, len(case_ids))
    if len(case_ids) >= 2:
        write_splits(out, kfold_splits(case_ids, n_splits=min(nfolds, len(case_ids))))


def summary_json(summary: PreprocessSummary) -> str:
    """A machine-readable summary line (printed by the CLI after the human one)."""
    return json.dumps({"out_dir": storage.display(summary.out_dir), "done": len(summary.done),
                       "skipped": len(summary.skipped), "failed": summary.failed,
                       "seconds": round(summary.seconds, 2)})
