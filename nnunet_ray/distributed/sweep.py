"""Hyper-parameter sweeps on Ray Tune: learning rate x patch size, or any training option, with ASHA.

    nnunet-ray tune --data PRE/Task04_Hippocampus/3d --results RESULTS --learning-rate loguniform:1e-4:1e-2 \\
        --patch-size 40,56,40 32,48,32 --num-samples 8 --folds 0-1 --max-epochs 100

Each drawn configuration trains on every ``--folds`` fold (one trial per fold, the same values on each); every
epoch's validation reaches Tune, so ASHA (https://docs.ray.io/en/latest/tune/api/schedulers.html) stops poor trials
at its milestones. A configuration's score is its trials' best validation mean Dice averaged over the folds.
``--search optuna`` draws the configurations with Optuna's TPE (``search_space.optuna_search``) on one fold.
Writes ``RESULTS/NAME/tune_results.csv`` (one row per trial, best configuration first) and ``best_config.json``
(the best configuration's values, accepted by ``nnunet-ray cv --config``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from nnunet_ray.config import TuneConfig, parse_int_list
from nnunet_ray.data import storage
from nnunet_ray.distributed.cv import trial_train_config
from nnunet_ray.distributed.experiment import (SCORE_MODE, TrialSpec, check_experiment_folder, check_options,
                                               experiment_folder, load_spec, raise_failed_trials, run_tuner,
                                               validate_trials)
from nnunet_ray.distributed.search_space import Space, candidates, optuna_search, search_space, tune_domains
from nnunet_ray.distributed.fold_run import SCORE, devices_held
from nnunet_ray.distributed.trial_spec import check_resume_options
from nnunet_ray.distributed.trial_data import check_folds, check_resumed_splits, preprocess_raw, resolve_data

RESULTS_CSV = "tune_results.csv"
BEST_CONFIG = "best_config.json"


def run_sweep(cfg: TuneConfig) -> dict[str, Any]:
    """Run (or with ``--resume``, finish) a sweep and write its results.

    Returns:
        {"table": the tune_results DataFrame, "best_config": dict, "best_score": float, "stopped_early": int,
        "epochs_saved": int, "seconds_saved": float (trial-seconds ASHA spared, estimated from each stopped
        trial's own epoch time), "path": experiment folder}.

    Raises:
        ConfigError / DatasetError: bad input, before Ray starts; RunError: trials failed for good.
    """
    cfg.validate()
    storage.check_writable_here(cfg.results, "results")
    space = search_space(cfg)
    sweep, searcher = _search(cfg, space)
    folds, dim = parse_int_list(cfg.folds, "folds"), cfg.train.dim
    data = resolve_data(cfg.data, (dim,), results=cfg.results, preprocessed=cfg.preprocessed)
    check_folds(data, folds)
    path = experiment_folder(cfg.results, cfg.name or f"{data.dataset}_tune")
    check_experiment_folder(path, resume=cfg.resume)
    base = trial_train_config(cfg.train, gpus=cfg.gpus_per_trial, workers=cfg.workers_per_trial, results=path)
    spec = TrialSpec(base=base, data_dirs=data.dirs, dims=(dim,), folds=folds, sweep=sweep, engine=cfg.engine)
    if cfg.resume:
        spec = dataclasses.replace(load_spec(path), sweep=spec.sweep)
        check_resume_options(cfg, spec)
        check_resumed_splits(path, spec.data_dirs)  # its runs' folds must still be the data's
    elif data.raw:
        check_options(spec, candidates(space))
        preprocess_raw(data, address=base.address)
    if not cfg.resume:
        validate_trials(spec, candidates(space))  # every patch size / value, before any trial starts
    results = run_tuner(spec, path=path, resume=cfg.resume, address=cfg.train.address, num_samples=cfg.num_samples,
                        scheduler=_scheduler(cfg, spec.base.max_epochs), random_state=cfg.search_seed,
                        searcher=searcher, max_concurrent=cfg.max_concurrent_trials)
    raise_failed_trials(results, path)
    outcome = summarise_sweep(results, max_epochs=spec.base.max_epochs, swept=sorted(space),
                              device=devices_held(spec.base))
    storage.write_text(storage.join(path, RESULTS_CSV), outcome["table"].to_csv(index=False))
    storage.write_json(storage.join(path, BEST_CONFIG), outcome["best_config"])
    return {**outcome, "path": path}


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


def trial_record(result: tune.Result, *, max_epochs: int, swept: list[str], devices: float = 0.0) -> dict[str, Any]:
    """One row of tune_results.csv from a trial's Tune result; ``devices``: GPUs (or CPUs) one trial holds."""
    metrics, config = result.metrics or {}, result.config
    epochs = int(metrics.get("epoch", -1)) + 1
    finished = epochs >= max_epochs or bool(metrics.get("stopped_early")) or bool(metrics.get("already_finished"))
    best = metrics.get("best_dice")
    times = result.metrics_dataframe["time_this_iter_s"].tolist() if result.metrics_dataframe is not None else []
    epoch_seconds = sum(times[1:]) / len(times[1:]) if len(times) > 1 else math.nan  # the first includes start-up
    row = {"trial": PurePosixPath(result.path).name, "fold": int(config["fold"]), "dim": int(config["dim"])}
    row.update({name: _plain(config["sweep"].get(name)) for name in swept})
    row.update({"trial_best_dice": best if best is not None and math.isfinite(best) else 0.0, "epochs": epochs,
                "stopped_by_scheduler": not finished, "epoch_seconds": epoch_seconds,
                "device_hours": devices * float(metrics.get("time_total_s") or 0.0) / 3600.0})
    return row


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def summarise_sweep(results: tune.ResultGrid, *, max_epochs: int, swept: list[str],
                    device: tuple[str, float] = ("CPU", 0.0)) -> dict[str, Any]:
    """The results table (a configuration's ``score`` = mean over its folds), the best configuration, what ASHA
    stopped, and the device-hours spent (``device``: what one trial holds, ``fold_run.devices_held``)."""
    rows = [trial_record(r, max_epochs=max_epochs, swept=swept, devices=device[1]) for r in results]
    table = pd.DataFrame(rows)
    table["config"] = table[swept].apply(lambda r: json.dumps([_plain(v) for v in r]), axis=1)
    table["score"] = table.groupby("config")["trial_best_dice"].transform("mean")
    table = table.sort_values(["score", "config", "fold"], ascending=[False, True, True]).reset_index(drop=True)
    best_row = table.iloc[0]
    stopped = table[table["stopped_by_scheduler"]]
    # A trial stopped after its first epoch has no start-up-free epoch time of its own: use the sweep's median.
    epoch_seconds = stopped["epoch_seconds"].fillna(table["epoch_seconds"].median()).fillna(0.0)
    saved = ((max_epochs - stopped["epochs"]) * epoch_seconds).sum()
    return {"table": table.drop(columns=["config"]), "best_config": {k: _plain(best_row[k]) for k in swept},
            "best_score": float(best_row["score"]), "stopped_early": int(len(stopped)),
            "epochs_saved": int((max_epochs - stopped["epochs"]).sum()), "seconds_saved": float(saved),
            "device": device[0], "device_hours": float(table["device_hours"].sum())}


def format_outcome(outcome: dict[str, Any]) -> str:
    """What ``nnunet-ray tune`` prints: the results table, what ASHA spared, the best configuration."""
    table, path = outcome["table"], outcome["path"]
    return "\n".join([
        table.drop(columns=["epoch_seconds"]).to_string(index=False),
        f"{len(table)} trials; ASHA stopped {outcome['stopped_early']} early, sparing {outcome['epochs_saved']} "
        f"epochs (~{outcome['seconds_saved']:.0f} trial-seconds); {outcome['device_hours']:.4f} "
        f"{outcome['device']}-hours in all",
        f"best configuration (mean Dice over folds {outcome['best_score']:.4f}): "
        f"{json.dumps(outcome['best_config'])} -> {storage.display(storage.join(path, BEST_CONFIG))}",
        f"compare trials: tensorboard --logdir {storage.display(path)}"])
