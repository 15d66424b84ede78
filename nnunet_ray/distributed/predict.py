"""Ensemble prediction on a Ray actor pool: ``predict_folder(cfg)``.

    nnunet-ray predict --models RESULTS/EXPERIMENT --input RAW_OR_IMAGES --out PREDS [--tta] [--actors N]

The driver resolves the members (every run's best checkpoint under an experiment folder), loads them once and puts
them in Ray's object store; each actor builds every member's network once ([1] one GPU per actor where the cluster
has GPUs, else CPUs). Cases go to whichever actor is free ([2] ``ray.wait`` on the running calls), so a slow case
never holds up the others. A case that fails is reported by name and the others go on; the exit status is 1 at the
end. Outputs are written atomically by the actors, so a rerun predicts only the unfinished cases; ``predict.json``
records the members (paths, network and preprocessing hashes), the options and per-case timings. Multi-node clusters
need ``--input`` on a filesystem every node sees; ``--models`` and ``--out`` may also be URIs (``s3://``, ``gs://``):
the driver downloads only the checkpoint files it loads, and each actor writes a case to local scratch and uploads
it (the label map, the file that marks the case done, last).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nnunet_ray.config import ConfigError, PredictConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.inputs import input_cases
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.distributed.predict_pool import CaseTask, predict_on_pool, window_options
from nnunet_ray.inference.members import BEST_CONFIGURATION, Member, check_compatible, find_checkpoints, load_member
from nnunet_ray.inference.outputs import output_names
from nnunet_ray.planning.schema import PLANS_FILE
from nnunet_ray.training.checkpoint import REQUIRED

logger = logging.getLogger(__name__)

RECORD = "predict.json"
SAME_RESULT_OPTIONS = ("tta", "amp", "overlap", "blend", "postprocess")  # options that change the predictions


@dataclass
class PredictSummary:
    """What one prediction run did; ``failed`` maps case id to its one-line error."""

    out_dir: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    actors: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (f"{len(self.done)} predicted, {len(self.skipped)} already done, {len(self.failed)} failed in "
                f"{self.seconds:.1f} s on {self.actors} actor(s) -> {storage.display(self.out_dir)}")


def _model_file(relative: str) -> bool:
    """The files of a ``--models`` folder that finding and loading members reads (no logs or predictions)."""
    return PurePosixPath(relative).name in {*REQUIRED, PLANS_FILE, BEST_CONFIGURATION}


@contextlib.contextmanager
def local_models(paths: Sequence[str], flag: str = "models") -> Iterator[list[tuple[str, Path]]]:
    """(location, local folder) of every ``--models`` entry: a path as it is, a URI's model files downloaded
    (checkpoints and best_configuration.json, not logs or predictions).

    Raises:
        ConfigError: an entry is not a folder (naming ``flag``).
    """
    for location in paths:
        if not storage.is_dir(location):
            raise ConfigError(f"{flag_name(flag)}: {storage.display(location)} is not a folder")
    with contextlib.ExitStack() as stack:
        yield [(storage.absolute(p), stack.enter_context(storage.local_copy(p, keep=_model_file))) for p in paths]


def _location(copies: list[tuple[str, Path]], checkpoint: Path) -> str:
    """Where a checkpoint found in a local copy really is (predict.json records that, stable across reruns)."""
    for location, local in copies:
        if checkpoint == local.resolve() or local.resolve() in checkpoint.parents:
            return storage.join(location, *checkpoint.relative_to(local.resolve()).parts)
    return str(checkpoint)


def load_members(paths: Sequence[str]) -> list[Member]:
    """Every checkpoint ``--models`` names (paths or URIs), loaded; one-line errors for unusable ones."""
    members = []
    with local_models(paths) as copies:
        for checkpoint in find_checkpoints([local for _, local in copies]):
            location = _location(copies, checkpoint)
            try:
                members.append(dataclasses.replace(load_member(checkpoint), path=location))
            except (OSError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"{flag_name('models')}: cannot load {storage.display(location)}: "
                                  f"{str(exc).splitlines()[0]}") from exc
    check_compatible(members)
    return members


def postprocess_classes(cfg: PredictConfig) -> list[int]:
    """Classes that keep only their largest component: from the --models experiment's best_configuration.json."""
    if not cfg.postprocess:
        return []
    for folder in cfg.models:
        location = storage.join(folder, BEST_CONFIGURATION)
        if storage.is_file(location):
            return [int(c) for c in storage.read_json(location).get("largest_component", [])]
    raise ConfigError(f"{flag_name('postprocess')}: no --models folder holds a best_configuration.json; run "
                      "`nnunet-ray evaluate --cv EXPERIMENT --data RAW` first")


def _record(cfg: PredictConfig, members: list[Member], largest_component: list[int]) -> dict:
    return {"members": [m.describe() for m in members], "options": dataclasses.asdict(cfg),
            "largest_component": largest_component,
            "n_classes": members[0].n_classes, "labels": members[0].labels}


def _check_out_folder(out: str, record: dict) -> dict:
    """The cases of an earlier run in ``out``; refuses a folder predicted by another ensemble or options."""
    path = storage.join(out, RECORD)
    if not storage.is_file(path):
        return {}
    earlier = storage.read_json(path)
    key = lambda r: ([(m["path"], m.get("network_hash")) for m in r["members"]],  # noqa: E731
                     [r["options"].get(k) for k in SAME_RESULT_OPTIONS])
    if key(earlier) != key(record):
        raise ConfigError(f"{flag_name('out')}: {storage.display(out)} holds predictions of other members or options "
                          f"({', '.join(SAME_RESULT_OPTIONS)}), see its {RECORD}; choose another folder")
    return earlier.get("cases", {})


def predict_folder(cfg: PredictConfig, *, cases: Sequence[CaseFiles] | None = None) -> PredictSummary:
    """Predict every case of ``cfg.input`` (or the given ``cases``) with the ensemble ``cfg.models`` into ``cfg.out``.

    Raises:
        ConfigError: bad options, no usable member, or an output folder of another ensemble.
        DatasetError: the input folder holds no cases.
    """
    return predict_folders([(cfg, cases)])[0]


def predict_folders(requests: Sequence[tuple[PredictConfig, Sequence[CaseFiles] | None]]) -> list[PredictSummary]:
    """Several ensembles, each predicting its cases into its own folder, on one actor pool (``evaluate --cv``: each
    fold's validation cases with that fold's members). The pool's actors, devices and window options are the first
    request's; every request must predict with the same window options.

    Returns:
        one summary per request, in order.
    """
    start = time.perf_counter()
    jobs = [_folder_job(cfg, cases) for cfg, cases in requests]
    pool_cfg = requests[0][0]
    if any(window_options(job.cfg) != window_options(pool_cfg) for job in jobs):
        raise ValueError("predict_folders: every request must use the same sliding-window options")
    tasks = [CaseTask(i, case, job.summary.out_dir, job.cfg.save_probabilities, tuple(job.largest_component))
             for i, job in enumerate(jobs) for case in job.todo]
    actors = 0
    if tasks:
        actors = predict_on_pool(pool_cfg, [job.members for job in jobs], tasks,
                                 lambda task, record: _collect(jobs[task.ensemble], record))
    for job in jobs:
        job.summary.actors = actors if job.todo else 0
        job.summary.seconds = time.perf_counter() - start
        storage.write_json(storage.join(job.summary.out_dir, RECORD), {**job.record, "cases": job.timings,
                           "actors": job.summary.actors, "seconds": job.summary.seconds})
    return [job.summary for job in jobs]


@dataclass
class _FolderJob:
    """One ensemble, the cases it still has to predict, and what its folder records."""

    cfg: PredictConfig
    members: list[Member]
    largest_component: list[int]
    record: dict
    timings: dict
    todo: list[CaseFiles]
    summary: PredictSummary


def _folder_job(cfg: PredictConfig, cases: Sequence[CaseFiles] | None) -> _FolderJob:
    """Load the members, check the output folder and find the cases not predicted yet (a rerun skips the rest)."""
    cfg.validate()
    members = load_members(cfg.models)
    largest_component = postprocess_classes(cfg)
    cases = input_cases(cfg.input) if cases is None else tuple(cases)
    out = storage.absolute(cfg.out)
    record = _record(cfg, members, largest_component)
    timings = _check_out_folder(out, record)
    present = set(storage.list_names(out))  # one listing, not one request per case on object storage
    todo = [c for c in cases if not present.issuperset(output_names(c.case_id,
                                                                    save_probabilities=cfg.save_probabilities))]
    summary = PredictSummary(out_dir=out, skipped=[c.case_id for c in cases if c not in todo])
    logger.info("predicting %d of %d cases with %d member(s) (%d already done)", len(todo), len(cases), len(members),
                len(summary.skipped))
    return _FolderJob(cfg, members, largest_component, record, timings, todo, summary)


def _collect(job: _FolderJob, record: dict) -> None:
    case_id = record["case_id"]
    job.timings[case_id] = {"status": record["status"], "seconds": round(record["seconds"], 3),
                            "error": record["error"]}
    if record["status"] == "failed":
        job.summary.failed[case_id] = record["error"]
        logger.error("%s", record["error"])
    else:
        (job.summary.done if record["status"] == "done" else job.summary.skipped).append(case_id)
