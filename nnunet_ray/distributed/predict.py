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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import ray
import torch

from nnunet_ray.config import ConfigError, PredictConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.inputs import input_cases
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.distributed.cluster import cluster_cpus, cluster_gpus, init_ray
from nnunet_ray.inference.ensemble import EnsemblePredictor, WindowOptions
from nnunet_ray.inference.members import BEST_CONFIGURATION, Member, check_compatible, find_checkpoints, load_member
from nnunet_ray.inference.outputs import output_names, predict_case
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


class PredictActor:
    """Holds every member's network once and predicts whole cases into the output folder."""

    def __init__(self, members: list[Member], options: dict, out_dir: str, save_probabilities: bool,
                 threads: int, largest_component: list[int]) -> None:
        torch.set_num_threads(threads)
        # [1] Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU; without one the networks run on its CPUs.
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.predictor = EnsemblePredictor(members, device=device, options=WindowOptions(**options))
        self.out_dir, self.save_probabilities, self.largest_component = out_dir, save_probabilities, largest_component

    def predict(self, case: CaseFiles) -> dict:
        """Predict and write one case; returns its record (failures included, never raised)."""
        with storage.writable_folder(self.out_dir) as out:  # a URI: written locally, uploaded when done
            return predict_case(self.predictor, case, out, save_probabilities=self.save_probabilities,
                                largest_component=self.largest_component)


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


def window_options(cfg: PredictConfig) -> WindowOptions:
    """The sliding-window settings of ``cfg``."""
    return WindowOptions(tta=cfg.tta, amp=cfg.amp, overlap=cfg.overlap, blend=cfg.blend,
                         batch_size=cfg.val_batch_size, sw_device=cfg.sw_device)


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


def actor_count(cfg: PredictConfig, n_cases: int) -> tuple[int, bool]:
    """(actors to start, whether they get GPUs): ``--actors``, capped to what the cluster can host at once."""
    gpus, cpus = cluster_gpus(), cluster_cpus()
    use_gpu = gpus > 0
    fits = int(gpus // cfg.gpus_per_actor) if use_gpu else cpus // cfg.cpus_per_actor
    wanted = cfg.actors or fits
    if wanted > fits:
        logger.warning("%s %d but the cluster holds %d; starting %d", flag_name("actors"), wanted, fits, fits)
    return max(1, min(wanted, fits, n_cases)), use_gpu


def run_pool(actors: list, cases: Sequence[CaseFiles], on_record: Callable[[dict], None]) -> None:
    """Feed ``cases`` to ``actors``, one at a time each, the next case to whichever finishes first."""
    queue, running = deque(cases), {}

    def submit(actor) -> None:
        if queue:
            case = queue.popleft()
            running[actor.predict.remote(case)] = (actor, case)

    for actor in actors:
        submit(actor)
    while running:
        # [2] whichever actor finishes first gets the next case.
        (ref,), _ = ray.wait(list(running), num_returns=1)
        actor, case = running.pop(ref)
        try:
            record = ray.get(ref)
            submit(actor)
        except ray.exceptions.RayError as exc:  # the actor died (out of memory, node lost): the case fails
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            record = {"case_id": case.case_id, "status": "failed", "seconds": 0.0,
                      "error": f"{case.case_id}: predicting actor failed: {problem}"}
            if not running and queue:  # no live actor will take the rest
                submit(actor)
        on_record(record)


def predict_folder(cfg: PredictConfig, *, cases: Sequence[CaseFiles] | None = None) -> PredictSummary:
    """Predict every case of ``cfg.input`` (or the given ``cases``) with the ensemble ``cfg.models`` into ``cfg.out``.

    Raises:
        ConfigError: bad options, no usable member, or an output folder of another ensemble.
        DatasetError: the input folder holds no cases.
    """
    cfg.validate()
    start = time.perf_counter()
    members = load_members(cfg.models)
    largest_component = postprocess_classes(cfg)
    cases = input_cases(cfg.input) if cases is None else tuple(cases)
    out = storage.absolute(cfg.out)
    record = _record(cfg, members, largest_component)
    timings = _check_out_folder(out, record)
    summary = PredictSummary(out_dir=out)
    present = set(storage.list_names(out))  # one listing, not one request per case on object storage
    todo = [c for c in cases if not present.issuperset(output_names(c.case_id,
                                                                    save_probabilities=cfg.save_probabilities))]
    summary.skipped = [c.case_id for c in cases if c not in todo]
    logger.info("predicting %d of %d cases with %d member(s) (%d already done)", len(todo), len(cases), len(members),
                len(summary.skipped))
    if todo:
        init_ray(cfg.address)
        summary.actors, use_gpu = actor_count(cfg, len(todo))
        remote = ray.remote(PredictActor).options(num_cpus=cfg.cpus_per_actor,
                                                  num_gpus=cfg.gpus_per_actor if use_gpu else 0)
        shared = ray.put(members)  # one copy in the object store for every actor
        options = dataclasses.asdict(window_options(cfg))
        actors = [remote.remote(shared, options, out, cfg.save_probabilities, cfg.cpus_per_actor,
                                largest_component) for _ in range(summary.actors)]
        progress = _Progress(len(todo))
        try:
            run_pool(actors, todo, lambda r: _collect(summary, timings, r, progress))
        finally:
            for actor in actors:
                ray.kill(actor)
    summary.seconds = time.perf_counter() - start
    storage.write_json(storage.join(out, RECORD),
                       {**record, "cases": timings, "actors": summary.actors, "seconds": summary.seconds})
    return summary


class _Progress:
    """One line per finished case: count, case, status, its time, and the remaining time at the current pace."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.start = total, 0, time.perf_counter()

    def __call__(self, record: dict) -> None:
        self.count += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.count * (self.total - self.count)
        logger.info("  [%d/%d] %s %s (%.1f s; elapsed %.0f s, ~%.0f s left)", self.count, self.total,
                    record["case_id"], record["status"], record["seconds"], elapsed, left)


def _collect(summary: PredictSummary, timings: dict, record: dict, progress: _Progress) -> None:
    case_id = record["case_id"]
    timings[case_id] = {"status": record["status"], "seconds": round(record["seconds"], 3), "error": record["error"]}
    if record["status"] == "failed":
        summary.failed[case_id] = record["error"]
        logger.error("%s", record["error"])
    else:
        (summary.done if record["status"] == "done" else summary.skipped).append(case_id)
    progress(record)
