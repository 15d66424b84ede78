"""Hyper-parameter sweeps on Ray Tune: learning rate x patch size, or any training option, with ASHA.

    nnunet-ray tune --data PRE/Task04_Hippocampus/3d --results RESULTS --learning-rate loguniform:1e-4:1e-2 \\
        --patch-size 40,56,40 32,48,32 --num-samples 8 --folds 0-1 --max-epochs 100

Each drawn configuration trains on every ``--folds`` fold (one trial per fold, the same values on each); every
epoch's validation reaches Tune, so ASHA (https://docs.ray.io/en/latest/tune/api/schedulers.html) stops poor trials
at its milestones. A configuration's score is its trials' best validation mean Dice averaged over the folds.
``--search optuna`` draws the configurations with Optuna's TPE (``search_space.optuna_search``) on one fold.
With no search flag the learning rate is swept (``search_space.DEFAULT_LR_RANGES``). ``--budget HH:MM:SS`` caps
the sweep's wall time with a Tune stopper (``budget.SweepBudget``): no trial starts after it, running ones stop, and
the results so far are written. Writes ``RESULTS/NAME/tune_results.csv`` (one row per trial that trained an epoch,
best configuration first) and ``best_config.json`` (the best configuration's values, accepted by
``nnunet-ray cv --config``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from nnunet_ray.config import RunError, TrainConfig, TuneConfig, parse_int_list, with_options
from nnunet_ray.data import storage
from nnunet_ray.distributed.budget import SweepBudget, read_budget_record
from nnunet_ray.distributed.cv import trial_train_config
from nnunet_ray.distributed.experiment import (
    SCORE_MODE,
    TrialSpec,
    check_options,
    raise_failed_trials,
    run_tuner,
    trial_results,
    validate_trials,
)
from nnunet_ray.distributed.fold_run import SCORE, devices_held
from nnunet_ray.distributed.search_space import Space, candidates, optuna_search, search_space, tune_domains
from nnunet_ray.distributed.trial_data import (
    ExperimentData,
    check_resumed_splits,
    open_experiment,
    preprocess_raw,
)
from nnunet_ray.distributed.trial_spec import check_resume_options, load_spec
from nnunet_ray.runs.options_file import BEST_CONFIG_FILE, save_best_config

RESULTS_CSV = "tune_results.csv"


def run_sweep(cfg: TuneConfig) -> dict[str, Any]:
    """Run (or with ``--resume``, finish) a sweep and write its results.

    Returns:
        {"table": the tune_results DataFrame (trials that trained an epoch), "best_config": dict, "best_score": float,
        "stopped_early": int, "epochs_saved": int, "seconds_saved": float (trial-seconds ASHA spared, estimated from
        each stopped trial's own epoch time), "trials": {"planned", "trained", "stopped_by_budget", "not_started"},
        "budget": the --budget that ran out, or "", "path": experiment folder}.

    Raises:
        ConfigError / DatasetError: bad input, before Ray starts; RunError: trials failed for good, or the budget
        ran out before any trial trained an epoch.
    """
    cfg.validate()
    cfg = dataclasses.replace(cfg, train=with_options(cfg.train))  # built in Python: its recipe's values
    space = search_space(cfg)
    sweep, searcher = _search(cfg, space)
    folds, dim = parse_int_list(cfg.folds, "folds"), cfg.train.dim
    data, path = open_experiment(cfg, (dim,), folds, "tune")
    spec = _checked_spec(cfg, space, TrialSpec(
        base=trial_train_config(cfg.train, gpus=cfg.gpus_per_trial, workers=cfg.workers_per_trial, results=path),
        data_dirs=data.dirs, dims=(dim,), folds=folds, sweep=sweep, engine=cfg.engine, budget=cfg.budget), data, path)
    budget = SweepBudget(cfg.budget_seconds, path) if cfg.budget_seconds else None
    results = run_tuner(spec, path=path, resume=cfg.resume, address=cfg.train.address, num_samples=cfg.num_samples,
                        scheduler=_scheduler(cfg, spec.base.max_epochs), random_state=cfg.search_seed,
                        searcher=searcher, max_concurrent=cfg.max_concurrent_trials, stopper=budget)
    raise_failed_trials(results, path)
    outcome = _outcome(trial_results(results), spec, space, path,
                       planned=planned_trials(space, cfg.num_samples, len(folds)))
    storage.write_text(storage.join(path, RESULTS_CSV), outcome["table"].to_csv(index=False))
    save_best_config(path, outcome["best_config"])
    return {**outcome, "path": path}


def _checked_spec(cfg: TuneConfig, space: Space, spec: TrialSpec, data: ExperimentData, path: str) -> TrialSpec:
    """The sweep's trials, every candidate value checked before any starts; on ``--resume`` the experiment's own
    (a flag given with another value is refused)."""
    if cfg.resume:
        spec = dataclasses.replace(load_spec(path), sweep=spec.sweep)
        check_resume_options(cfg, spec)
        check_resumed_splits(path, spec.data_dirs)  # its runs' folds must still be the data's
        return spec
    if data.raw:
        check_options(spec, candidates(space))
        preprocess_raw(data, address=spec.base.address)
    validate_trials(spec, candidates(space))  # every patch size / value, before any trial starts
    return spec


def planned_trials(space: Space, num_samples: int, n_folds: int) -> int:
    """Trials the sweep would run without a budget: ``--num-samples`` per combination of grid values, per fold."""
    return num_samples * n_folds * math.prod(len(values) for kind, values in space.values() if kind == "grid")


def _outcome(results: list[tune.Result], spec: TrialSpec, space: Space, path: str, *, planned: int) -> dict[str, Any]:
    """``summarise_sweep`` over the trials that trained an epoch, with what the budget (if it ran out) cut short,
    and best_config.json's values (with the recipe when the sweep's is not the default, for ``cv --config``)."""
    record = read_budget_record(path) if spec.budget else None
    cut = set(record.stopped_running if record else ())
    trained = [r for r in results if "epoch" in (r.metrics or {})]
    if not trained:
        raise RunError(f"no trial trained an epoch within --budget {spec.budget}; start the sweep again with a "
                       f"longer --budget and a new --name" if record else "no trial reported an epoch")
    outcome = summarise_sweep(trained, max_epochs=spec.base.max_epochs, swept=sorted(space),
                              device=devices_held(spec.base), budget_stopped=cut, max_seconds=spec.base.max_seconds)
    started = {PurePosixPath(r.path).name for r in trained} | cut
    outcome["trials"] = {"planned": planned, "trained": len(trained), "stopped_by_budget": len(cut),
                         "not_started": max(0, planned - len(started))}
    outcome["budget"] = spec.budget if record else ""
    if spec.base.recipe != TrainConfig().recipe and "recipe" not in space:
        outcome["best_config"] = {"recipe": spec.base.recipe, **outcome["best_config"]}
    return outcome


def _search(cfg: TuneConfig, space: Space) -> tuple[dict[str, Any], Searcher | None]:
    """``param_space``'s swept part and the searcher drawing the rest (None: random search over all of it)."""
    if cfg.search == "optuna":  # the scheduler's metric and mode: TPE models what ASHA ranks trials by
        return optuna_search(space, seed=cfg.search_seed, num_samples=cfg.num_samples, metric=SCORE, mode=SCORE_MODE)
    return tune_domains(space), None


def _scheduler(cfg: TuneConfig, max_epochs: int) -> ASHAScheduler | None:
    if cfg.scheduler != "asha":
        return None
    # max_t one past the last epoch: a trial that trains to the end finishes by itself (writing its summary)
    # instead of being stopped by ASHA at its final report.
    return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs + 1, grace_period=cfg.grace_period,
                         reduction_factor=cfg.reduction_factor)


def trial_record(result: tune.Result, *, max_epochs: int, swept: list[str], devices: float = 0.0,
                 budget_stopped: bool = False) -> dict[str, Any]:
    """One row of tune_results.csv from a trial's Tune result; ``devices``: GPUs (or CPUs) one trial holds;
    ``budget_stopped``: the sweep's budget ran out while it trained (so the scheduler did not stop it)."""
    metrics, config = result.metrics or {}, result.config
    assert config is not None, "a Tune trial's result has its config"
    epochs = int(metrics.get("epoch", -1)) + 1
    # Ended by itself: all its epochs, early stopping or its own --max-time (stop_reason), or before a restore.
    finished = (epochs >= max_epochs or metrics.get("stop_reason") is not None or bool(metrics.get("stopped_early"))
                or bool(metrics.get("already_finished")))
    best = metrics.get("best_dice")
    times = result.metrics_dataframe["time_this_iter_s"].tolist() if result.metrics_dataframe is not None else []
    epoch_seconds = sum(times[1:]) / len(times[1:]) if len(times) > 1 else math.nan  # the first includes start-up
    row = {"trial": PurePosixPath(result.path).name, "fold": int(config["fold"]), "dim": int(config["dim"])}
    row.update({name: _plain(config["sweep"].get(name)) for name in swept})
    row.update({"trial_best_dice": best if best is not None and math.isfinite(best) else 0.0, "epochs": epochs,
                "stopped_by_scheduler": not finished and not budget_stopped,
                "stopped_by_budget": not finished and budget_stopped, "epoch_seconds": epoch_seconds,
                "device_hours": devices * float(metrics.get("time_total_s") or 0.0) / 3600.0})
    return row


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def summarise_sweep(results: Iterable[tune.Result], *, max_epochs: int, swept: list[str],
                    device: tuple[str, float] = ("CPU", 0.0), budget_stopped: AbstractSet[str] = frozenset(),
                    max_seconds: float | None = None) -> dict[str, Any]:
    """The results table (a configuration's ``score`` = mean over its folds), the best configuration, what ASHA
    stopped, and the device-hours spent (``device``: what one trial holds, ``fold_run.devices_held``).
    ``budget_stopped``: the trials (folder names) the budget stopped while they trained. ``max_seconds``: each
    trial's ``--max-time``, so a stopped trial would have trained until then, not to ``max_epochs``."""
    rows = [trial_record(r, max_epochs=max_epochs, swept=swept, devices=device[1],
                         budget_stopped=PurePosixPath(r.path).name in budget_stopped) for r in results]
    table = pd.DataFrame(rows)
    table["config"] = table[swept].apply(lambda r: json.dumps([_plain(v) for v in r]), axis=1)
    table["score"] = table.groupby("config")["trial_best_dice"].transform("mean")
    table = table.sort_values(["score", "config", "fold"], ascending=[False, True, True]).reset_index(drop=True)
    best_row = table.iloc[0]
    stopped = table[table["stopped_by_scheduler"]]
    # A trial stopped after its first epoch has no start-up-free epoch time of its own: use the sweep's median.
    epoch_seconds = stopped["epoch_seconds"].fillna(table["epoch_seconds"].median()).fillna(0.0)
    spared = max_epochs - stopped["epochs"]
    if max_seconds is not None:  # the epochs its time budget held at its own epoch time, at most max_epochs
        held = (max_seconds / epoch_seconds.where(epoch_seconds > 0)).fillna(0.0).apply(math.ceil)
        spared = (held.clip(upper=max_epochs) - stopped["epochs"]).clip(lower=0)
    saved = (spared * epoch_seconds).sum()
    return {"table": table.drop(columns=["config"]), "best_config": {k: _plain(best_row[k]) for k in swept},
            "best_score": float(best_row["score"]), "stopped_early": int(len(stopped)),
            "epochs_saved": int(spared.sum()), "seconds_saved": float(saved),
            "device": device[0], "device_hours": float(table["device_hours"].sum())}


def format_outcome(outcome: dict[str, Any]) -> str:
    """What ``nnunet-ray tune`` prints: the results table, what ASHA spared, the best configuration."""
    table, path, trials = outcome["table"], outcome["path"], outcome["trials"]
    budget = [f"--budget {outcome['budget']} ran out: {trials['trained']} of {trials['planned']} trials trained "
              f"(--num-samples x grid x folds); {trials['stopped_by_budget']} stopped while training, "
              f"{trials['not_started']} never started"] if outcome["budget"] else []
    return "\n".join([
        table.drop(columns=["epoch_seconds"]).to_string(index=False),
        *budget,
        f"{len(table)} trials; ASHA stopped {outcome['stopped_early']} early, sparing {outcome['epochs_saved']} "
        f"epochs (~{outcome['seconds_saved']:.0f} trial-seconds); {outcome['device_hours']:.4f} "
        f"{outcome['device']}-hours in all",
        f"best configuration (mean Dice over folds {outcome['best_score']:.4f}): "
        f"{json.dumps(outcome['best_config'])} -> {storage.display(storage.join(path, BEST_CONFIG_FILE))}",
        f"compare trials: tensorboard --logdir {storage.display(path)}"])
