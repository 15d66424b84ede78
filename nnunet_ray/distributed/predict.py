"""Ensemble prediction on a Ray actor pool: ``predict_folder(cfg)``.

    nnunet-ray predict --models RESULTS/EXPERIMENT --input RAW_OR_IMAGES --out PREDS [--tta] [--actors N]

The driver resolves the members (every run's best checkpoint under an experiment folder), loads them once and puts
them in Ray's object store; each actor builds every member's network once ([1] one GPU per actor where the cluster
has GPUs, else CPUs). Cases go to whichever actor is free ([2] ``ray.wait`` on the running calls), so a slow case
never holds up the others. A case that fails is reported by name and the others go on; the exit status is 1 at the
end. ``predict.json`` (``nnunet_ray.inference.record``: members and their hashes, the options, per-case status and
timings) is written before the first case and updated as each case lands, so a rerun with the same members and
options predicts only the cases not recorded as done; a folder of other members or options, or holding predictions
no record accounts for, is refused (``--overwrite`` starts a recorded folder over). ``--input``, ``--models`` and
``--out`` may be paths (on a multi-node cluster: a filesystem every node sees) or URIs (``s3://``, ``gs://``): each
actor downloads the images of the case it predicts (``data.prediction_inputs``), the driver downloads only the
checkpoint files it loads, and each actor writes a case to local scratch and uploads it (the label map, the file
that marks the case done, last). Before any actor starts, a probe on every node checks that it reads the input and
writes (and sees the driver's writes in) the output folder (``probe``).
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
from nnunet_ray.data.local_views import local_copy
from nnunet_ray.data.prediction_inputs import Inputs, open_inputs
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.predict_pool import CaseTask, predict_on_pool, window_options
from nnunet_ray.distributed.probe import probe_storage
from nnunet_ray.inference.members import Member, check_compatible, find_checkpoints, load_member
from nnunet_ray.inference.record import (
    RECORD,
    PredictRecord,
    is_prediction_file,
    read_record,
    weights_hash,
    write_record,
)
from nnunet_ray.planning.schema import PLANS_FILE
from nnunet_ray.runs.best_configuration import BEST_CONFIGURATION_FILE, load_best_configuration
from nnunet_ray.runs.checkpoint import REQUIRED

logger = logging.getLogger(__name__)


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
    return PurePosixPath(relative).name in {*REQUIRED, PLANS_FILE, BEST_CONFIGURATION_FILE}


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
        yield [(storage.absolute(p), stack.enter_context(local_copy(p, keep=_model_file))) for p in paths]


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
        best = load_best_configuration(folder)
        if best is not None:
            return list(best.largest_component)
    raise ConfigError(f"{flag_name('postprocess')}: no --models folder holds a best_configuration.json; run "
                      "`nnunet-ray evaluate --cv EXPERIMENT --data RAW` first")


def _new_record(cfg: PredictConfig, members: list[Member], largest_component: list[int]) -> PredictRecord:
    return PredictRecord(members=[{**m.describe(), "weights_hash": weights_hash(m.weights)} for m in members],
                         options=dataclasses.asdict(cfg), largest_component=largest_component,
                         n_classes=members[0].n_classes, labels=members[0].labels)


def claim_folder(out: str, fresh: PredictRecord, *, overwrite: bool) -> PredictRecord:
    """The record a run into ``out`` continues: the earlier one's cases under ``fresh``'s members and options, or
    ``fresh`` alone for a new folder (or, with ``overwrite``, after removing the outputs the earlier record names).

    Raises:
        ConfigError: ``out`` is a file, the folder holds predictions no record names, its record is unreadable, or
            (without ``overwrite``) it records other members or options.
    """
    shown = storage.display(out)
    if storage.exists(out) and not storage.is_dir(out):
        raise ConfigError(f"{flag_name('out')}: {shown} exists and is not a folder")
    try:
        earlier = read_record(out)
    except ValueError as exc:
        raise ConfigError(f"{flag_name('out')}: {exc}; remove the folder's predictions and {RECORD} to start "
                          "over") from exc
    names = storage.list_names(out)
    recorded = earlier.output_names() if earlier else set()
    strangers = [n for n in names if is_prediction_file(n) and n not in recorded]
    if strangers:
        raise ConfigError(f"{flag_name('out')}: {shown} holds {len(strangers)} prediction file(s) that no {RECORD} "
                          f"records ({', '.join(strangers[:3])}{', ...' if len(strangers) > 3 else ''}); predict "
                          "into an empty folder, or remove them")
    differences = _differences(earlier, fresh) if earlier else []
    if differences and not overwrite:
        raise ConfigError(f"{flag_name('out')}: {shown} holds predictions made with other {', '.join(differences)} "
                          f"(see its {RECORD}); predict into another folder, or pass {flag_name('overwrite')} to "
                          "replace them")
    if earlier and overwrite:
        _remove_recorded(out, [n for n in names if n in recorded])
        return fresh
    if earlier:
        fresh.planned, fresh.cases = earlier.planned, earlier.cases
    return fresh


def _differences(earlier: PredictRecord, fresh: PredictRecord) -> list[str]:
    """What differs between two runs' identities, for a message: ``members``, ``--tta True (now False)``..."""
    before, now = earlier.identity(), fresh.identity()
    old = earlier.version < fresh.version  # an older record has no weights hashes: its members never match
    described = {"members": "members (an older record, without weights hashes)" if old else
                 "members (checkpoints or their weights)",
                 "largest_component": f"post-processing classes {before['largest_component']} (now "
                                      f"{now['largest_component']})"}
    return [described.get(k, f"{flag_name(k)} {before[k]} (now {now[k]})") for k in earlier.differences(fresh)]


def _remove_recorded(out: str, names: list[str]) -> None:
    """Remove a folder's recorded outputs, then its record (last: a removal cut short can be rerun)."""
    logger.info("--overwrite: removing %d recorded prediction file(s) and %s from %s", len(names), RECORD,
                storage.display(out))
    for name in names:
        storage.delete(storage.join(out, name))
    storage.delete(storage.join(out, RECORD))


def predict_folder(cfg: PredictConfig, *, cases: Inputs | Sequence[CaseFiles] | None = None) -> PredictSummary:
    """Predict every case of ``cfg.input`` (or the given ``cases``) with the ensemble ``cfg.models`` into ``cfg.out``.

    Raises:
        ConfigError: bad options, no usable member, an output folder of another ensemble, or a node that cannot
            read the input or write the output folder.
        DatasetError: the input folder holds no cases.
    """
    return predict_folders([(cfg, cases)])[0]


def predict_folders(requests: Sequence[tuple[PredictConfig, Inputs | Sequence[CaseFiles] | None]], *,
                    flags: tuple[str, str] = ("input", "out"), out_root: str = "") -> list[PredictSummary]:
    """Several ensembles, each predicting its cases into its own folder, on one actor pool (``evaluate --cv``: each
    fold's validation cases with that fold's members). The pool's actors, devices and window options are the first
    request's; every request must predict with the same window options.

    Args:
        requests: per ensemble its options and its cases (None: every case of its ``--input``).
        flags: the options the images and the output folders came from, for the storage probe's messages.
        out_root: the folder the probe checks every node writes in (default: the first request's ``--out``).

    Returns:
        one summary per request, in order.
    """
    start = time.perf_counter()
    jobs = [_folder_job(cfg, cases) for cfg, cases in requests]
    pool_cfg = requests[0][0]
    if any(window_options(job.cfg) != window_options(pool_cfg) for job in jobs):
        raise ValueError("predict_folders: every request must use the same sliding-window options")
    tasks = [CaseTask(i, case, job.summary.out_dir, job.cfg.save_probabilities, tuple(job.largest_component),
                      job.inputs.source) for i, job in enumerate(jobs) for case in job.todo]
    if tasks:
        _probe(jobs, tasks, flags, out_root or jobs[0].summary.out_dir)
    for job in jobs:  # before the first case: every output the pool writes is accounted for
        write_record(job.summary.out_dir, job.record)
    actors = 0
    if tasks:
        actors = predict_on_pool(pool_cfg, [job.members for job in jobs], tasks,
                                 lambda task, result: _collect(jobs[task.ensemble], result))
    for job in jobs:
        job.summary.actors = job.record.actors = actors if job.todo else 0
        job.summary.seconds = job.record.seconds = round(time.perf_counter() - start, 3)
        write_record(job.summary.out_dir, job.record)
    return [job.summary for job in jobs]


def _probe(jobs: list[_FolderJob], tasks: list[CaseTask], flags: tuple[str, str], out_root: str) -> None:
    """Before any actor starts: every node must read an image the actors will open (the first one the driver sees:
    a file missing everywhere is its own case's failure) and write, and see the driver's writes in, the output
    folder; else one line naming the node and the path. ``--models`` needs no probe: only the driver reads it (the
    members reach the actors through Ray's object store)."""
    init_ray(jobs[0].cfg.address)
    images = ((jobs[task.ensemble].inputs, path) for task in tasks for path in task.case.images)
    image = next((inputs.location(path) for inputs, path in images if inputs.has(path)), "")
    probe_storage(readable={flags[0]: image} if image else {}, results=out_root, results_flag=flags[1])


@dataclass
class _FolderJob:
    """One ensemble, the cases it still has to predict (with their image files' fingerprints), and its record."""

    cfg: PredictConfig
    members: list[Member]
    largest_component: list[int]
    record: PredictRecord
    inputs: Inputs  # every case, and where their images are
    todo: list[CaseFiles]
    fingerprints: dict[str, list | None]
    summary: PredictSummary


def _folder_job(cfg: PredictConfig, cases: Inputs | Sequence[CaseFiles] | None) -> _FolderJob:
    """Load the members, claim the output folder and find the cases not done yet (a rerun skips the rest)."""
    cfg.validate()
    storage.check_writable_here(cfg.out, "out")  # before the members' weights are loaded
    members = load_members(cfg.models)
    largest_component = postprocess_classes(cfg)
    if cases is None:
        inputs = open_inputs(cfg.input, channels=members[0].in_channels)
    else:
        inputs = cases if isinstance(cases, Inputs) else Inputs(tuple(cases))
    out = storage.absolute(cfg.out)
    record = claim_folder(out, _new_record(cfg, members, largest_component), overwrite=cfg.overwrite)
    present = set(storage.list_names(out))  # one listing, not one request per case on object storage
    todo = [c for c in inputs.cases if not record.is_done(c, present, save_probabilities=cfg.save_probabilities,
                                                          fingerprint_of=inputs.fingerprint)]
    todo_ids = {c.case_id for c in todo}
    record.planned = sorted({*record.planned, *todo_ids})
    summary = PredictSummary(out_dir=out, skipped=[c.case_id for c in inputs.cases if c.case_id not in todo_ids])
    logger.info("predicting %d of %d cases with %d member(s) (%d already done)", len(todo), len(inputs.cases),
                len(members), len(summary.skipped))
    fingerprints = {c.case_id: inputs.fingerprint(c) for c in todo}
    return _FolderJob(cfg, members, largest_component, record, inputs, todo, fingerprints, summary)


def _collect(job: _FolderJob, result: dict) -> None:
    """Record one case's result as it comes back from the pool (its outputs have landed when it is done)."""
    case_id = result["case_id"]
    job.record.cases[case_id] = {"status": result["status"], "seconds": round(result["seconds"], 3),
                                 "error": result["error"], "inputs": job.fingerprints.get(case_id)}
    write_record(job.summary.out_dir, job.record)
    if result["status"] == "failed":
        job.summary.failed[case_id] = result["error"]
        logger.error("%s", result["error"])
    else:
        job.summary.done.append(case_id)
