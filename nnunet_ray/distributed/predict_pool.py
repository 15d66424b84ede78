"""The Ray actor pool that predicts: each actor holds every ensemble of a command (e.g. each fold's best checkpoint
for ``evaluate --cv``) and predicts whole cases; a case names its ensemble and its output folder.

One pool serves a whole command: actors start once, import torch and build their networks once, and cases of every
ensemble share them, the next case going to whichever actor is free ([2] ``ray.wait`` on the running calls). An
actor that dies mid-case (its process killed, out of memory, its node lost) is replaced by a new one and the case is
tried again there ([3]), at most ``MAX_ATTEMPTS`` times per case: a case that kills every actor it meets fails with
one line naming it, and the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ray
import torch

from nnunet_ray.config import PredictConfig, flag_name
from nnunet_ray.data.local_views import writable_folder
from nnunet_ray.data.prediction_inputs import local_case
from nnunet_ray.data.types import CaseError, CaseFiles
from nnunet_ray.distributed.cluster import init_ray, reachable_resources
from nnunet_ray.inference.ensemble import EnsemblePredictor, WindowOptions
from nnunet_ray.inference.members import Member
from nnunet_ray.inference.outputs import predict_case

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # tries per case whose actor died under it
# What a call raises when its actor's process is gone: killed, crashed, its node lost, or (OutOfMemoryError) stopped by
# Ray's memory monitor.
ACTOR_DEATHS = (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError)


@dataclass(frozen=True)
class CaseTask:
    """One case for the pool: which ensemble predicts it, where it goes, what is written."""

    ensemble: int  # index into the pool's ensembles
    case: CaseFiles
    out_dir: str  # path or URI
    save_probabilities: bool
    largest_component: tuple[int, ...] = ()
    source: str = ""  # "": the case's paths are read in place; a URI: they are relative to it (prediction_inputs)


class PredictActor:
    """Holds every ensemble's networks once and predicts whole cases into their output folders."""

    def __init__(self, ensembles: list[list[Member]], options: dict, threads: int) -> None:
        torch.set_num_threads(threads)
        # [1] Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU; without one the networks run on its CPUs.
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.predictors = [EnsemblePredictor(members, device=device, options=WindowOptions(**options))
                           for members in ensembles]

    def predict(self, task: CaseTask) -> dict:
        """Predict and write one case; returns its record (failures included, never raised)."""
        try:
            # A URI input: this case's images downloaded to scratch first; a URI output: written locally, uploaded.
            with local_case(task.case, task.source) as case, writable_folder(task.out_dir) as out:
                return predict_case(self.predictors[task.ensemble], case, out,
                                    save_probabilities=task.save_probabilities,
                                    largest_component=list(task.largest_component))
        except CaseError as err:  # an image could not be downloaded
            return _failed(task, err.problem)


def window_options(cfg: PredictConfig) -> WindowOptions:
    """The sliding-window settings of ``cfg``."""
    return WindowOptions(**dataclasses.asdict(cfg.window()), amp=cfg.amp, sw_device=cfg.sw_device)


def actor_count(cfg: PredictConfig, n_cases: int) -> tuple[int, bool]:
    """(actors to start, whether they get GPUs): ``--actors``, capped to what the cluster can host at once at its
    largest (an autoscaling cluster's node types, so a GPU cluster whose GPU nodes are not up yet still predicts on
    GPU actors, which ask the autoscaler for them)."""
    reachable = reachable_resources()
    gpus, cpus = reachable.get("GPU", 0.0), int(reachable.get("CPU", 0.0))
    use_gpu = gpus > 0
    fits = int(gpus // cfg.gpus_per_actor) if use_gpu else cpus // cfg.cpus_per_actor
    wanted = cfg.actors or fits
    if wanted > fits:
        logger.warning("%s %d but the cluster holds %d; starting %d", flag_name("actors"), wanted, fits, fits)
    return max(1, min(wanted, fits, n_cases)), use_gpu


def _failed(task: CaseTask, problem: str) -> dict:
    return {"case_id": task.case.case_id, "status": "failed", "seconds": 0.0,
            "error": f"{task.case.case_id}: {problem}"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_pool(actors: list, tasks: Sequence[CaseTask], on_record: Callable[[CaseTask, dict], None], *,
             replace: Callable[[], object], max_attempts: int | None = None) -> None:
    """Feed ``tasks`` to ``actors``, one at a time each, the next task to whichever finishes first.

    Args:
        actors: the started actors; replacements of dead ones are appended (the caller stops them all).
        tasks: the cases.
        on_record: called with each case's final record (done, or failed with a one-line error).
        replace: starts a new actor in place of a dead one.
        max_attempts: tries per case whose actor dies under it (default ``MAX_ATTEMPTS``, read at call time).
    """
    max_attempts = MAX_ATTEMPTS if max_attempts is None else max_attempts
    queue, running = deque((task, 1) for task in tasks), {}

    def submit(actor) -> None:
        if queue:
            task, attempt = queue.popleft()
            running[actor.predict.remote(task)] = (actor, task, attempt)

    for actor in list(actors):
        submit(actor)
    while running:
        # [2] whichever actor finishes first gets the next case.
        (ref,), _ = ray.wait(list(running), num_returns=1)
        actor, task, attempt = running.pop(ref)
        try:
            record = ray.get(ref)
        except ACTOR_DEATHS as exc:  # [3] the actor died mid-case: a new one takes its place
            record = _after_actor_death(task, attempt, max_attempts, _first_line(exc), queue)
            ray.kill(actor)  # an unreachable one may yet come back: free its resources for the replacement
            actor = None
            if queue:
                actor = replace()
                actors.append(actor)
        except ray.exceptions.RayError as exc:  # the call itself failed (e.g. an upload): the actor lives on
            cause = getattr(exc, "cause", None) or exc  # a RayTaskError carries the exception the actor raised
            record = _failed(task, f"predicting failed: {type(cause).__name__}: {_first_line(cause)}")
        if actor is not None:
            submit(actor)
        if record is not None:
            on_record(task, record)


def _after_actor_death(task: CaseTask, attempt: int, max_attempts: int, problem: str, queue: deque) -> dict | None:
    """Put a case whose actor died back at the front of ``queue`` (None), or its failure once it has had
    ``max_attempts`` tries."""
    case_id = task.case.case_id
    if attempt < max_attempts:
        logger.warning("%s: its predicting actor died (%s); trying again on a new actor (attempt %d of %d)", case_id,
                       problem, attempt + 1, max_attempts)
        queue.appendleft((task, attempt + 1))
        return None
    return _failed(task, f"its predicting actor died on each of {max_attempts} attempts (out of memory or killed?); "
                         f"last: {problem}")


def predict_on_pool(cfg: PredictConfig, ensembles: list[list[Member]], tasks: Sequence[CaseTask],
                    on_record: Callable[[CaseTask, dict], None]) -> int:
    """Start one pool for ``tasks`` (actors, devices, window options from ``cfg``), run it, stop it.

    Returns:
        the number of actors it ran.
    """
    init_ray(cfg.address)
    count, use_gpu = actor_count(cfg, len(tasks))
    remote = ray.remote(PredictActor).options(num_cpus=cfg.cpus_per_actor,
                                              num_gpus=cfg.gpus_per_actor if use_gpu else 0)
    shared = ray.put(ensembles)  # one copy in the object store for every actor
    options = dataclasses.asdict(window_options(cfg))
    start = lambda: remote.remote(shared, options, cfg.cpus_per_actor)  # noqa: E731
    actors = [start() for _ in range(count)]
    progress = Progress(len(tasks))
    def on_done(task: CaseTask, record: dict) -> None:
        on_record(task, record)
        progress(record)

    try:
        run_pool(actors, tasks, on_done, replace=start)
    finally:
        for actor in actors:
            ray.kill(actor)  # type: ignore[arg-type]  # Ray types .remote() as the handle or the class
    return count


class Progress:
    """One line per finished case: count, case, status, its time, and the remaining time at the current pace."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.start = total, 0, time.perf_counter()

    def __call__(self, record: dict) -> None:
        self.count += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.count * (self.total - self.count)
        logger.info("  [%d/%d] %s %s (%.1f s; elapsed %.0f s, ~%.0f s left)", self.count, self.total,
                    record["case_id"], record["status"], record["seconds"], elapsed, left)
