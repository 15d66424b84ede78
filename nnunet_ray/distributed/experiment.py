"""Ray Tune experiments over folds (``cv``) and sweeps (``tune``): one trial = one fold's training run.

Each trial runs ``run_trial``. A single-worker fold trains inside the trial (``trial_fit``), its device declared to
Tune, so Tune schedules trials by what they hold and frees it when a trial ends or ASHA stops it. A multi-worker
fold's trial is a driver that builds and fits the fold's ``TorchTrainer`` with ``TuneReportCallback`` (under Train
V2 a ``TorchTrainer`` cannot be handed to ``Tuner``); Tune cannot see those workers, so how many such trials run at
once is computed from the cluster, and stopping them (ASHA) needs ``ray[default]`` and the dashboard: Train's
placement-group cleaner uses the State API (https://docs.ray.io/en/latest/train/user-guides/hyperparameter-
optimization.html). Every epoch's report, with its finite ``score``, reaches Tune and its scheduler.

Layout: ``RESULTS/NAME/`` is the Tune experiment (its state, for ``--resume``) and holds one folder per trial,
named from dim, fold and the swept values, that is both the Tune trial folder and the training run
(``epoch_NNNN/`` checkpoints, ``metrics.jsonl``, ``tensorboard/`` with HParams, ``summary.json``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

from nnunet_ray.config import RunError, Stopped, with_options
from nnunet_ray.data import storage
from nnunet_ray.distributed import stopping
from nnunet_ray.distributed.cluster import init_ray, reachable_resources
from nnunet_ray.distributed.fold_run import SCORE
from nnunet_ray.distributed.hparams import HParamsCallback
from nnunet_ray.distributed.ray_internals import poll_workers_often, quiet_tune_stop_noise
from nnunet_ray.distributed.run_storage import storage_location
from nnunet_ray.distributed.train import fit_fold, prepare_fold
from nnunet_ray.distributed.trial_fit import fit_in_trial
from nnunet_ray.distributed.trial_spec import (
    DRIVER_CPUS,
    SPEC_FILE,
    TrialSpec,
    declared_resources,
    max_concurrent_trials,
    resume_hint,
    trial_config,
    trial_name,
    trial_resources,
)
from nnunet_ray.runs.best import CHECKPOINT_SCORE, SCORE_ORDER
from nnunet_ray.runs.summary import RunSummary, load_summary, summary_location

log = logging.getLogger(__name__)


# A Ray Train trial's driver lost with its node (it holds no device; on cluster.yaml it runs on the on-demand head)
# is rerun this often. Kept small: a run that failed for good already used its --max-failures worker restarts, and
# each driver rerun would spend them again.
TRAIN_DRIVER_RETRIES = 2
SCORE_MODE = "max"  # how Tune's scheduler and searcher rank trials by SCORE (a Dice)


# ----------------------------------------------------------------------------------------------- the trial

def run_trial(config: dict, spec: dict, faults: dict | None = None) -> None:
    """Tune's function trainable: train one fold, every epoch reported to Tune; inside this trial
    (``trial_fit``, one worker) or as the driver of a Ray Train run (several workers).

    Args:
        config: the trial's dim, fold and swept values.
        spec: ``TrialSpec.to_json()`` (bound with ``tune.with_parameters``).
        faults: test-only fault injection (``fold_run.fault_hook``), bound the same way.
    """
    trials = TrialSpec.from_json(spec)
    cfg = trial_config(config, trials)
    name = tune.get_context().get_trial_name()
    run_dir = storage.join(cfg.results, name)
    done = _finished_summary(run_dir)
    if done is not None:  # trained before the experiment's driver died, before Tune recorded it: not rerun
        tune.report({SCORE: done.best_dice or 0.0, "best_dice": done.best_dice, "epoch": (done.epochs or 1) - 1,
                     "already_finished": True})
        return
    # resume_training: a restored trial continues its run from the last checkpoint (same name, same folder).
    cfg = dataclasses.replace(cfg, experiment=name, resume_training=True)
    if trials.in_trial:
        fit_in_trial(cfg, name, run_dir, faults=faults)
        return
    poll_workers_often()  # Ray Train passes the environment to the run's controller
    fit_fold(cfg, name, run_dir, callbacks=[TuneReportCallback()], driver_cpus=DRIVER_CPUS, worker_faults=faults)


def _finished_summary(run_dir: str) -> RunSummary | None:
    return load_summary(run_dir) if storage.is_file(summary_location(run_dir)) else None


# ----------------------------------------------------------------------------------------------- resources

def check_options(spec: TrialSpec, candidates: dict[str, list[Any]] | None = None) -> None:
    """The checks that need no data (ranges, patch rank, flag combinations), for every dim and every candidate value:
    before a raw dataset is preprocessed, so a typo costs a second, not a preprocessing run.

    Raises:
        ConfigError: naming the flag (or swept option) and the problem.
    """
    for dim in spec.dims:
        cfg = dataclasses.replace(spec.base, dim=dim, data=spec.data_dirs[dim]).validate()
        for name, values in (candidates or {}).items():
            for value in values:
                with_options(cfg, **{name: value}).validate()  # as trial_config sets it (a recipe resolves)


def validate_trials(spec: TrialSpec, candidates: dict[str, list[Any]] | None = None) -> None:
    """Check every (dim, fold) and every candidate value of a swept option against the data, before any trial.

    Args:
        candidates: field -> values to try one at a time (choice / grid values, or the bounds of a range).

    Raises:
        ConfigError: naming the flag (or swept option) and the problem.
    """
    for dim in spec.dims:
        for fold in spec.folds:
            cfg = dataclasses.replace(spec.base, dim=dim, fold=fold, data=spec.data_dirs[dim])
            prepare_fold(cfg)
            for name, values in (candidates or {}).items():
                for value in values:
                    prepare_fold(with_options(cfg, **{name: value}))


# ----------------------------------------------------------------------------------------------- running

def run_tuner(spec: TrialSpec, *, path: str, resume: bool, address: str, num_samples: int = 1,
              scheduler: Any = None, random_state: int = 0, searcher: Searcher | None = None,
              max_concurrent: int = 0, stopper: Any = None, faults: dict | None = None) -> tune.ResultGrid:
    """Start (or with ``resume``, restore) the experiment at ``path`` and run every trial to its end.

    Args:
        spec: the trials (on ``resume``: ``load_spec(path)``, the options the experiment started with).
        searcher: draws the swept values not in ``spec.sweep`` (e.g. OptunaSearch); None: random search with
            ``random_state``. On ``resume`` the experiment's own searcher, with its state, is restored.
        max_concurrent: ``--max-concurrent-trials`` (Ray Train trials; 0 = from the cluster at its largest).
        stopper: a ``tune.Stopper`` (``RunConfig(stop=...)``), also added as a callback when it is one (the sweep's
            ``--budget``); on ``resume`` the experiment's own, restored with it.
        faults: test-only fault injection in every trial (``fold_run.fault_hook``).

    Returns:
        the ``ResultGrid`` of all trials (finished earlier, restored and new).
    """
    # Tune's own TensorBoard logger would add a second run per trial; the run's tensorboard/ folder already holds
    # the scalars, and HParamsCallback the hyper-parameters.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune snapshots the experiment whenever a trial's kept checkpoint changes (so --resume never points at a
    # deleted one); with epochs of seconds it then warns that snapshots are frequent, which is what we want.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(address)
    quiet_tune_stop_noise()
    name = storage.basename(path)
    concurrency = _concurrency(spec, max_concurrent)
    trainable = trial_trainable(spec, faults)
    # Tune's storage: a local folder, or the bucket's path with the filesystem opened from the URI (its endpoint and
    # credentials), as for a Train run (https://docs.ray.io/en/latest/tune/tutorials/tune-storage.html).
    storage_path, storage_filesystem = storage_location(storage.parent(path))
    if resume:
        tuner = tune.Tuner.restore(f"{storage_path.rstrip('/')}/{name}", trainable=trainable,
                                   resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=storage_filesystem)
    else:
        storage.write_json(storage.join(path, SPEC_FILE), spec.to_json())
        tuner = tune.Tuner(
            trainable, param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                metric=SCORE, mode=SCORE_MODE, num_samples=num_samples, scheduler=scheduler,
                search_alg=_search_algorithm(searcher, concurrency, random_state),
                # A reused Ray Train driver deadlocks with Train V2's TuneReportCallback (its controller blocks
                # putting a report the restarted trial never reads; seen on Ray 2.60 in ASHA sweeps). A fold
                # trained in the trial has no controller: its process and imported torch serve the next trial.
                reuse_actors=spec.in_trial, trial_name_creator=trial_name, trial_dirname_creator=trial_name),
            run_config=_run_config(spec, path, storage_path, storage_filesystem, stopper))
    return _fit_experiment(tuner, path)


def _run_config(spec: TrialSpec, path: str, storage_path: str, storage_filesystem: Any,
                stopper: Any) -> tune.RunConfig:
    """Where the experiment lives, what it logs, and when it stops."""
    return tune.RunConfig(name=storage.basename(path), storage_path=storage_path,
                          storage_filesystem=storage_filesystem, verbose=1, stop=stopper, callbacks=[
                              CSVLoggerCallback(), JsonLoggerCallback(), HParamsCallback(path),
                              *([stopper] if isinstance(stopper, tune.Callback) else [])],
                          **_trial_retention(spec))


def _fit_experiment(tuner: tune.Tuner, path: str) -> tune.ResultGrid:
    """Run the experiment's trials; a stop (Ctrl-C, SIGTERM) ends in one ``Stopped`` line saying how to resume."""
    start = time.perf_counter()
    try:
        with stopping.tune_stops_gracefully():
            results = tuner.fit()  # on Ctrl-C / SIGTERM Tune saves the experiment, ends the trials and returns
    except KeyboardInterrupt:  # a second signal while Tune was saving
        ray.shutdown()
        raise Stopped(f"stopped; continue with {resume_hint(path)}") from None
    log.info("%s: %d trials in %.0f s", storage.basename(path), len(results), time.perf_counter() - start)
    if stopping.requested():
        ray.shutdown()  # the trials' last forwarded log lines come out before the command's own last line
        finished = sum(1 for r in trial_results(results) if r.error is None and (r.metrics or {}).get("done"))
        raise Stopped(f"stopped with {finished} of {len(results)} trials finished; continue with "
                      f"{resume_hint(path)}")
    return results


def _concurrency(spec: TrialSpec, max_concurrent: int = 0) -> int | None:
    """How many trials may run at once: None (as many as Tune can place, by their declared resources) for folds
    trained in the trial; for Ray Train runs, whose workers Tune cannot see, ``max_concurrent`` or what the cluster
    holds at its largest (an autoscaling cluster's node types: pending runs are demand the autoscaler sees).

    Raises:
        ConfigError: one trial needs more than the cluster can ever hold.
    """
    per_trial = trial_resources(spec.base)
    fits = max_concurrent_trials(per_trial, reachable_resources())
    held = ", ".join(f"{v:g} {k}" for k, v in per_trial.items() if v > 0)
    if spec.in_trial:
        log.info("each trial holds %s; Ray Tune runs as many at once as the cluster has room for", held)
        return None
    log.info("each trial holds %s on Ray Train workers: %d trial(s) at a time", held, max_concurrent or fits)
    return max_concurrent or fits


def trial_trainable(spec: TrialSpec, faults: dict | None) -> Any:
    """``run_trial`` bound to the spec, with ``declared_resources``."""
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec.to_json(), faults=faults),
                               declared_resources(spec, ray.cluster_resources()))


def _trial_retention(spec: TrialSpec) -> dict[str, Any]:
    """Folds trained in the trial: Tune keeps the best checkpoint (by ``CHECKPOINT_SCORE``) and the latest, and
    restarts a trial whose process or node died from its latest one (``--max-failures``). A Ray Train run keeps its
    checkpoints and restarts its workers itself; Tune only retries its driver (``TRAIN_DRIVER_RETRIES``), whose rerun
    resumes the run from its latest checkpoint."""
    if not spec.in_trial:
        return {"failure_config": tune.FailureConfig(max_failures=TRAIN_DRIVER_RETRIES)}
    return {"checkpoint_config": tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=CHECKPOINT_SCORE,
                                                       checkpoint_score_order=SCORE_ORDER),
            "failure_config": tune.FailureConfig(max_failures=spec.base.max_failures)}


def _search_algorithm(searcher: Searcher | None, concurrency: int | None, random_state: int) -> Any:
    # constant_grid_search: each drawn configuration is the same on every fold (and dim). Tune ignores
    # max_concurrent_trials when given a search algorithm, so the algorithm itself gets the cap. Without a cap
    # Tune still asks a model-based searcher for one pending trial at a time (tune_controller.py,
    # _get_max_pending_trials), so it learns from finished trials instead of drawing everything up front.
    if searcher is not None:
        return ConcurrencyLimiter(searcher, max_concurrent=concurrency) if concurrency else searcher
    return BasicVariantGenerator(max_concurrent=concurrency or 0, constant_grid_search=True,
                                 random_state=random_state)


def trial_results(results: tune.ResultGrid) -> list[tune.Result]:
    """The grid's results in order, as iterating over it gives them (``ResultGrid`` iterates through
    ``__getitem__``; it declares no ``__iter__``, so type checkers do not see it as iterable)."""
    return [results[i] for i in range(len(results))]


def raise_failed_trials(results: tune.ResultGrid, path: str) -> None:
    """One line for trials that failed for good (their own retries used up).

    Raises:
        RunError: naming how many failed, the first cause, and how to retry.
    """
    errors = [r.error for r in trial_results(results) if r.error is not None]
    if errors:
        cause = [line for line in str(errors[0]).splitlines() if line.strip()] or [type(errors[0]).__name__]
        raise RunError(f"{len(errors)} of {len(results)} trials failed (first: {cause[-1].strip()}); rerun with "
                       f"--resume --name {storage.basename(path)} to retry them")
