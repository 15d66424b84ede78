"""Planning and preprocessing on Ray Data: cases are sharded over every CPU of the cluster (``case_pool``).

    nnunet-ray plan --data RAW_DIR --dim 3 --results PRE_ROOT
    nnunet-ray preprocess --data RAW_DIR --results PRE_ROOT --dim 3
    nnunet-ray preprocess --data /mnt/shared/Task04_Hippocampus --results s3://bucket/pre --dim 3

The results root may be a shared path or a URI: every actor writes there, wherever it runs
(``preprocessing.writer``), and a probe checks first that every node reads ``--data`` and writes ``--results``.
Actors reserve the memory the largest case needs, and the pool grows with the cluster (Ray Data's autoscaling actor
pool) instead of being sized by the CPUs present when the call starts. A bad case is reported on one line and never
aborts the dataset; a case worker that dies mid-case costs only the unfinished cases, which run again
(``case_pool``).

A rerun redoes the cases whose raw files changed ("reprocessed"), and keeps ``splits.json``: folds are made once
(``data.folds.settled_splits``); a changed case set is refused until ``--new-splits`` or ``--splits FILE`` says what
the folds should become.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from nnunet_ray.config import ConfigError, PlanConfig, PreprocessConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.dataset import DATASET_FILE
from nnunet_ray.data.folds import (
    CaseSetChanged,
    import_splits,
    load_splits,
    save_splits,
    settled_splits,
    split_case_ids,
    splits_location,
)
from nnunet_ray.data.records import RecordError
from nnunet_ray.data.staging import open_raw_dataset
from nnunet_ray.data.types import DatasetInfo
from nnunet_ray.distributed.case_pool import case_memory_bytes, map_cases_retrying, raw_case_memory_bytes
from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.probe import probe_storage
from nnunet_ray.planning.fingerprint import (
    DatasetFingerprint,
    case_fingerprint,
    load_fingerprint,
    merge_fingerprints,
    save_fingerprint,
)
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import Plans, PlansNotFoundError, load_plans, save_plans
from nnunet_ray.preprocessing.writer import case_writer
from nnunet_ray.runs.names import dim_folder

logger = logging.getLogger(__name__)

@dataclass
class PreprocessSummary:
    """What one preprocessing run did; ``failed`` maps case id to its one-line error."""

    out_dir: Path | str  # a str when the results root is a URI
    done: list[str] = field(default_factory=list)
    reprocessed: list[str] = field(default_factory=list)  # done before, redone because their raw files changed
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def finished(self) -> list[str]:
        """Every case that is preprocessed now, whether in this run or before."""
        return self.done + self.reprocessed + self.skipped

    def line(self) -> str:
        redone = f"{len(self.reprocessed)} reprocessed (raw files changed), " if self.reprocessed else ""
        return (f"{len(self.done)} preprocessed, {redone}{len(self.skipped)} already done, {len(self.failed)} "
                f"failed in {self.seconds:.1f} s -> {storage.display(self.out_dir)}")


def output_dir(results: str, dataset: DatasetInfo, dim: int, exec_mode: str = "training") -> str:
    """``RESULTS/<dataset>/<dim>d`` for training cases, ``.../val`` or ``.../test`` for the others (path or URI)."""
    base = storage.join(storage.absolute(results), dataset.name, dim_folder(dim))
    return base if exec_mode == "training" else storage.join(base, exec_mode)


def _probe(data: str, results: str) -> None:
    """Every node must read the raw dataset.json and write (and see the driver's writes in) the results root."""
    probe_storage(readable={"data": storage.join(storage.absolute(data), DATASET_FILE)},
                  results=storage.absolute(results))


def plan_dataset(cfg: PlanConfig) -> Plans:
    """Fingerprint every training case on Ray Data and derive plans.json (written when ``cfg.results`` is set).

    Returns:
        The plans.
    """
    cfg.validate()
    if cfg.results:
        storage.check_writable_here(cfg.results, "results")
    dataset, raw = open_raw_dataset(cfg.data)
    init_ray(cfg.address)
    if cfg.results:
        _probe(cfg.data, cfg.results)
    memory = raw_case_memory_bytes(dataset.training)  # this node's copy: the driver's staged or shared folder
    records = list(map_cases_retrying(dataset, raw, dataset.training, case_fingerprint, num_workers=0,
                                      memory=memory))
    for record in records:
        if record.get("error"):
            logger.warning("%s (left out of the fingerprint)", record["error"])
    fingerprint = merge_fingerprints(dataset, records)  # a failed case's "error" is non-empty
    plans = make_plans(dataset, fingerprint, dim=cfg.dim, min_fmap=cfg.min_fmap, max_depth=cfg.max_depth,
                       memory_budget_mvox=cfg.memory_budget_mvox)
    if cfg.results:
        out = output_dir(cfg.results, dataset, cfg.dim)
        save_fingerprint(out, fingerprint)
        save_plans(out, plans)
    return plans


def _ensure_plans(cfg: PreprocessConfig, dataset: DatasetInfo) -> Plans:
    plans_dir = output_dir(cfg.results, dataset, cfg.dim)
    try:  # reuse: a rerun must keep the hash the finished cases were written with
        plans = load_plans(plans_dir)
    except PlansNotFoundError:
        logger.info("planning %s (%dd) ...", dataset.name, cfg.dim)
        return plan_dataset(cfg.planning())
    save_plans(plans_dir, plans)  # the same content, in the current format when the file was older
    return plans


def preprocess_dataset(cfg: PreprocessConfig, *, faults: dict | None = None) -> PreprocessSummary:
    """Plan if needed, then preprocess every case of ``cfg.exec_mode`` in parallel; settle splits.json.

    A bad case is reported on one line and left out; every other case is still written.

    Args:
        faults: test-only fault injection (``case_pool.CaseMapper``).

    Raises:
        ConfigError: a bad option or splits file; a changed case set without ``--new-splits`` / ``--splits``.
        RunError: case workers kept dying (``case_pool.CASE_ATTEMPTS``).
    """
    cfg.validate()
    storage.check_writable_here(cfg.results, "results")
    dataset, raw = open_raw_dataset(cfg.data)
    imported = _imported_splits(cfg, dataset)  # a bad splits file fails before any planning or case work
    out = output_dir(cfg.results, dataset, cfg.dim, cfg.exec_mode)
    existing = _existing_splits(cfg, out, dataset)  # a case gone from dataset.json is refused before Ray starts
    plans = _ensure_plans(cfg, dataset)  # existing plans are read (and a bad file refused) before Ray starts
    init_ray(cfg.address)
    _probe(cfg.data, cfg.results)
    cases = dataset.test if cfg.exec_mode == "test" else dataset.training
    summary = PreprocessSummary(out_dir=out if storage.is_uri(out) else Path(out))
    start = time.perf_counter()
    memory = case_memory_bytes(_read_fingerprint(cfg, dataset), plans)
    run = case_writer(plans, out, cfg.exec_mode)
    mapped = map_cases_retrying(dataset, raw, cases, run, num_workers=cfg.case_workers, memory=memory,
                                faults=faults)
    for index, record in enumerate(mapped, start=1):
        _record(summary, record)
        if record["status"] != "failed":
            logger.info("  [%d/%d] %s %s (%.1f s)", index, len(cases), record["case_id"], record["status"],
                        record["seconds"])
    summary.seconds = time.perf_counter() - start
    if cfg.exec_mode == "training":
        _settle_splits(cfg, out, summary, existing=existing, imported=imported)
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
        {"done": summary.done, "reprocessed": summary.reprocessed, "skipped": summary.skipped}[status].append(case_id)


def _read_fingerprint(cfg: PreprocessConfig, dataset: DatasetInfo) -> DatasetFingerprint | None:
    try:
        return load_fingerprint(output_dir(cfg.results, dataset, cfg.dim))
    except FileNotFoundError:  # plans written by hand or by an older version: size actors by default
        return None
    except RecordError as err:
        logger.warning("%s; preprocessing actors get the default memory", err)
        return None


def _existing_splits(cfg: PreprocessConfig, out: str, dataset: DatasetInfo) -> list[dict[str, list[str]]] | None:
    """The folds in ``out``'s splits.json now (None: there are none, or ``--new-splits`` replaces them anyway).

    Raises:
        ConfigError: on a plain rerun, the file is malformed or names cases no longer in dataset.json.
    """
    if cfg.exec_mode != "training" or cfg.new_splits:
        return None
    try:
        existing = load_splits(out)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        if cfg.splits:  # imported folds replace it
            return None
        raise ConfigError(f"{storage.display(splits_location(out))}: unreadable ({err}); rerun `nnunet-ray "
                          f"preprocess` with {flag_name('new_splits')} to write new folds or with "
                          f"{flag_name('splits')} FILE to import them") from err
    gone = split_case_ids(existing) - {case.case_id for case in dataset.training}
    if gone and not cfg.splits:
        _refuse_case_set(out, CaseSetChanged([], sorted(gone)), len(dataset.training))
    return existing


def _settle_splits(cfg: PreprocessConfig, out: str, summary: PreprocessSummary, *,
                   existing: list[dict[str, list[str]]] | None, imported: list[dict[str, list[str]]] | None) -> None:
    """Write splits.json when it is missing, imported or renewed; keep it otherwise (``settled_splits``)."""
    finished = summary.finished
    if imported is None and len(finished) < cfg.nfolds and (existing is None or cfg.new_splits):
        logger.warning("%d cases for %d folds; writing %d folds", len(finished), cfg.nfolds, len(finished))
    try:
        splits = settled_splits(existing, finished, nfolds=cfg.nfolds, imported=imported, renew=cfg.new_splits,
                                failed=list(summary.failed))
    except CaseSetChanged as changed:
        _refuse_case_set(out, changed, len(finished))
    if splits is not None:
        save_splits(out, splits)
    elif existing is not None and imported is None and len(existing) != min(cfg.nfolds, len(finished)):
        logger.info("keeping %s (%d folds; %s makes %d new ones)", storage.display(splits_location(out)),
                    len(existing), flag_name("new_splits"), min(cfg.nfolds, len(finished)))


def _refuse_case_set(out: str, changed: CaseSetChanged, n_cases: int) -> NoReturn:
    # Named as a command, not a bare flag: cv and tune preprocess a raw dataset too, without these flags.
    raise ConfigError(f"{storage.display(splits_location(out))}: {changed}; training runs use these folds, "
                      f"so they are kept: rerun `nnunet-ray preprocess` with {flag_name('new_splits')} to make new "
                      f"folds over the {n_cases} cases (runs trained on the old ones then refuse to resume) or with "
                      f"{flag_name('splits')} FILE to import folds") from changed


def summary_json(summary: PreprocessSummary) -> str:
    """A machine-readable summary line (printed by the CLI after the human one)."""
    return json.dumps({"out_dir": storage.display(summary.out_dir), "done": len(summary.done),
                       "reprocessed": len(summary.reprocessed), "skipped": len(summary.skipped),
                       "failed": summary.failed,
                       "seconds": round(summary.seconds, 2)})
