"""Planning and preprocessing on Ray Data: cases are sharded over every CPU of the cluster.

    nnunet-ray plan --data RAW_DIR --dim 3 --results PRE_ROOT
    nnunet-ray preprocess --data RAW_DIR --results PRE_ROOT --dim 3

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
from nnunet_ray.data.atomic import save_json
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import import_splits, kfold_splits, sorted_case_ids, write_splits
from nnunet_ray.data.types import CaseFiles, DatasetInfo
from nnunet_ray.distributed.cluster import cluster_cpus, init_ray
from nnunet_ray.planning.fingerprint import case_fingerprint, merge_fingerprints
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import Plans, load_plans, save_plans
from nnunet_ray.preprocessing.case import preprocess_case

logger = logging.getLogger(__name__)


@dataclass
class PreprocessSummary:
    """What one preprocessing run did; ``failed`` maps case id to its one-line error."""

    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (f"{len(self.done)} preprocessed, {len(self.skipped)} already done, {len(self.failed)} failed "
                f"in {self.seconds:.1f} s -> {self.out_dir}")


def _case_to_row(case: CaseFiles) -> dict[str, Any]:
    # Arrow rows: plain strings only ("" = no label) so blocks of train and test cases share one schema.
    return {"case_id": case.case_id, "images": [str(p) for p in case.images],
            "label": str(case.label) if case.label else ""}


def _row_to_case(row: dict[str, Any]) -> CaseFiles:
    return CaseFiles(case_id=row["case_id"], images=tuple(Path(p) for p in row["images"]),
                     label=Path(row["label"]) if row["label"] else None)


class _CaseMapper:
    """Ray Data actor applying a per-case function to rows.

    Actors rather than tasks: each actor imports the stack once and keeps a few rows queued, so a worker never
    idles between cases (per-task scheduling left ~30 % of two CPUs idle on sub-second cases).
    """

    def __init__(self, fn: Callable[[CaseFiles], dict]):
        self.fn = fn

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        record = self.fn(_row_to_case(row))
        return {k: ("" if v is None else v) for k, v in record.items()}


def _map_cases(cases: tuple[CaseFiles, ...], fn: Callable[[CaseFiles], dict], *,
               num_workers: int) -> Iterator[dict[str, Any]]:
    """Run ``fn`` on every case with Ray Data, one case per block, on ``num_workers`` actors (0 = one per CPU)."""
    workers = min(num_workers or max(1, cluster_cpus()), max(1, len(cases)))
    dataset = ray.data.from_items([_case_to_row(c) for c in cases], override_num_blocks=max(1, len(cases)))
    # max_restarts=0: Ray Data passes its actors' constructor arguments through the object store, and Ray logs an
    # error line per actor when such an actor may restart, because its restart would fail if they were lost
    # (ray-project/ray#53727). A crashed case worker fails the run instead; a rerun skips the finished cases.
    # Ray 2.60 has no named parameter for it yet (the kwargs route is deprecated for 2.64; Ray is pinned < 2.61).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        mapped = dataset.map(_CaseMapper, fn_constructor_args=(fn,), num_cpus=1, max_restarts=0,
                             compute=ray.data.ActorPoolStrategy(size=workers))
    yield from mapped.iter_rows()


def output_dir(results: str | Path, dataset: DatasetInfo, dim: int, exec_mode: str = "training") -> Path:
    """``RESULTS/<dataset>/<dim>d`` for training cases; ``.../val`` or ``.../test`` for the other modes."""
    base = Path(results).expanduser().resolve() / dataset.name / f"{dim}d"
    return base if exec_mode == "training" else base / exec_mode


def plan_dataset(cfg: PlanConfig) -> Plans:
    """Fingerprint every training case on Ray Data and derive plans.json (written when ``cfg.results`` is set).

    Returns:
        The plans.
    """
    cfg.validate()
    dataset = load_dataset(cfg.data)
    init_ray(cfg.address)
    records = list(_map_cases(dataset.training, case_fingerprint, num_workers=0))
    for record in records:
        if record.get("error"):
            logger.warning("%s (left out of the fingerprint)", record["error"])
    fingerprint = merge_fingerprints(dataset, records)  # a failed case's "error" is non-empty
    plans = make_plans(dataset, fingerprint, dim=cfg.dim, min_fmap=cfg.min_fmap, max_depth=cfg.max_depth,
                       memory_budget_mvox=cfg.memory_budget_mvox)
    if cfg.results:
        out = output_dir(cfg.results, dataset, cfg.dim)
        save_json(out / "fingerprint.json", fingerprint)
        save_plans(out, plans)
    return plans


def _ensure_plans(cfg: PreprocessConfig, dataset: DatasetInfo) -> Plans:
    plans_dir = output_dir(cfg.results, dataset, cfg.dim)
    if (plans_dir / "plans.json").exists():
        plans = load_plans(plans_dir)  # reuse: a rerun must keep the hash the finished cases were written with
        save_plans(plans_dir, plans)  # the same content, in the current format when the file was older
        return plans
    logger.info("planning %s (%dd) ...", dataset.name, cfg.dim)
    return plan_dataset(PlanConfig(data=cfg.data, results=cfg.results, dim=cfg.dim, min_fmap=cfg.min_fmap,
                                   max_depth=cfg.max_depth, address=cfg.address))


def preprocess_dataset(cfg: PreprocessConfig) -> PreprocessSummary:
    """Plan if needed, then preprocess every case of ``cfg.exec_mode`` in parallel; write splits.json.

    A bad case is reported on one line and left out; every other case is still written.
    """
    cfg.validate()
    dataset = load_dataset(cfg.data)
    imported = _imported_splits(cfg, dataset)  # a bad splits file fails before any case is processed
    plans = _ensure_plans(cfg, dataset)  # existing plans are read (and a bad file refused) before Ray starts
    init_ray(cfg.address)
    out = output_dir(cfg.results, dataset, cfg.dim, cfg.exec_mode)
    cases = dataset.test if cfg.exec_mode == "test" else dataset.training
    summary = PreprocessSummary(out_dir=out)
    start = time.perf_counter()

    def run(case: CaseFiles) -> dict:
        return preprocess_case(case, plans, out, mode=cfg.exec_mode)

    for index, record in enumerate(_map_cases(cases, run, num_workers=cfg.case_workers), start=1):
        _record(summary, record)
        if record["status"] != "failed":
            logger.info("  [%d/%d] %s %s (%.1f s)", index, len(cases), record["case_id"], record["status"],
                        record["seconds"])
    summary.seconds = time.perf_counter() - start
    if imported is not None:
        write_splits(out / "splits.json", imported)
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


def _write_splits(out: Path, summary: PreprocessSummary, nfolds: int) -> None:
    # Folds over the cases that are actually on disk, ordered as the reference's sorted(glob("*_x.npy")).
    case_ids = sorted_case_ids(summary.done + summary.skipped)
    if len(case_ids) < nfolds:
        logger.warning("%d cases for %d folds; writing %d folds", len(case_ids), nfolds, len(case_ids))
    if len(case_ids) >= 2:
        write_splits(out / "splits.json", kfold_splits(case_ids, n_splits=min(nfolds, len(case_ids))))


def summary_json(summary: PreprocessSummary) -> str:
    """A machine-readable summary line (printed by the CLI after the human one)."""
    return json.dumps({"out_dir": str(summary.out_dir), "done": len(summary.done),
                       "skipped": len(summary.skipped), "failed": summary.failed,
                       "seconds": round(summary.seconds, 2)})
