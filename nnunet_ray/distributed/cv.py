"""Cross-validation on Ray Tune: every (fold, dim) one trial, then one summary over folds.

    nnunet-ray cv --data RAW_OR_PRE --results RESULTS --dims 2,3 --folds 0-4 --gpus-per-trial 1 --name five_fold

Writes ``RESULTS/NAME/cv_summary.csv`` and ``cv_summary.json``: per fold and dim the best epoch, per-class and mean
Dice at that epoch, epochs run, wall time and best checkpoint; then mean and std over the folds of each dim.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import pandas as pd

from nnunet_ray.config import CVConfig, TrainConfig, parse_int_list, with_options
from nnunet_ray.data import storage
from nnunet_ray.distributed.experiment import (
    TrialSpec,
    check_options,
    raise_failed_trials,
    run_tuner,
    validate_trials,
)
from nnunet_ray.distributed.trial_data import (
    check_resumed_splits,
    open_experiment,
    preprocess_raw,
)
from nnunet_ray.distributed.trial_spec import check_resume_options, load_spec
from nnunet_ray.planning.schema import load_plans
from nnunet_ray.runs.names import fold_run_name
from nnunet_ray.runs.options_file import apply_options_file
from nnunet_ray.runs.summary import load_summary
from nnunet_ray.training.logs import METRICS_FILE, parse_metrics

SUMMARY_CSV = "cv_summary.csv"
SUMMARY_JSON = "cv_summary.json"


def trial_train_config(train: TrainConfig, *, gpus: float, workers: int, results: str) -> TrainConfig:
    """The options every trial shares: the command's training options (a config built in Python with a recipe gets
    its values, ``with_options``), its resources, the experiment folder."""
    return dataclasses.replace(with_options(train), gpus=gpus, workers=workers, results=str(results),
                               resume_training=False, experiment="", benchmark=False)


def run_cv(cfg: CVConfig) -> pd.DataFrame:
    """Run (or with ``--resume``, finish) a cross-validation and write its summary (``format_table`` shows it).

    Returns:
        the summary table (one row per fold and dim, then ``mean`` and ``std`` rows per dim).

    Raises:
        ConfigError / DatasetError: bad input, before Ray starts (resources: before any trial starts).
        RunError: a trial failed for good.
    """
    cfg.validate()
    started_at = time.time()
    dims, folds = parse_int_list(cfg.dims, "dims"), parse_int_list(cfg.folds, "folds")
    data, path = open_experiment(cfg, dims, folds, "cv")
    if cfg.resume:  # exactly the options the experiment started with
        spec = load_spec(path)
        check_resume_options(dataclasses.replace(cfg, train=apply_options_file(cfg.train, cfg.config)), spec)
        check_resumed_splits(path, spec.data_dirs)  # its runs' folds must still be the data's
    else:
        base = trial_train_config(apply_options_file(cfg.train, cfg.config), gpus=cfg.gpus_per_trial,
                                  workers=cfg.workers_per_trial, results=path)
        spec = TrialSpec(base=base, data_dirs=data.dirs, dims=dims, folds=folds, engine=cfg.engine)
        check_options(spec)
        if data.raw:  # a raw dataset's trials can only be checked once it is planned
            preprocess_raw(data, address=base.address)
        validate_trials(spec)
    results = run_tuner(spec, path=path, resume=cfg.resume, address=cfg.train.address,
                        max_concurrent=cfg.max_concurrent_trials)
    raise_failed_trials(results, path)
    table = summarise(path, dims=spec.dims, folds=spec.folds, plans_labels=_labels(spec.data_dirs))
    runs = [storage.join(path, fold_run_name(d, f)) for d in spec.dims for f in spec.folds]
    table.attrs["cost"] = experiment_cost(runs, started_at=started_at)
    write_summary(table, path)
    return table


def experiment_cost(run_dirs: list[str], *, started_at: float) -> dict[str, Any]:
    """What the command cost: its wall time, the device-hours its trials held, and the share of the wall during
    which at least one trial was training (the union of the trials' in-worker spans within this command's wall)."""
    now = time.time()
    summaries = [load_summary(run) for run in run_dirs]
    spans = sorted((max(started_at, s.finished_at - (s.seconds_in_worker or 0.0)), min(now, s.finished_at))
                   for s in summaries)
    training, covered_until = 0.0, started_at
    for begin, end in spans:
        training += max(0.0, end - max(begin, covered_until))
        covered_until = max(covered_until, end)
    wall = now - started_at
    return {"wall_seconds": wall, "device": summaries[0].device if summaries else "CPU",
            "device_hours": sum(s.device_hours for s in summaries),
            "training_share": training / wall if wall > 0 else 0.0}


def cost_line(cost: dict[str, Any], trials: int) -> str:
    """The command's last line: wall time, device-hours and the share of the wall spent training."""
    return (f"{trials} trials in {cost['wall_seconds']:.0f} s wall, {cost['device_hours']:.4f} "
            f"{cost['device']}-hours, training {cost['training_share']:.0%} of the wall")


def _labels(dirs: dict[int, str]) -> list[str]:
    plans = load_plans(next(iter(dirs.values())))
    return [plans.labels.get(str(c), str(c)) for c in range(1, plans.n_classes)]


def trial_row(run_dir: str, *, dim: int, fold: int, class_names: list[str]) -> dict[str, Any]:
    """One summary row from a finished trial's ``summary.json`` and ``metrics.jsonl`` (path or URI)."""
    summary = load_summary(run_dir)
    best_epoch = summary.best_epoch
    metrics = storage.join(run_dir, METRICS_FILE)
    records = {r["epoch"]: r for r in parse_metrics(storage.read_text(metrics) if storage.is_file(metrics) else "")}
    per_class = (records.get(best_epoch) or {}).get("dice") or [math.nan] * len(class_names)
    row: dict[str, Any] = {"dim": f"{dim}d", "fold": str(fold), "best_epoch": best_epoch}
    row.update({f"dice_{name}": value for name, value in zip(class_names, per_class)})
    row.update({"dice_mean": summary.best_dice, "epochs": summary.epochs, "seconds": summary.seconds,
                "device_hours": summary.device_hours, "best_checkpoint": summary.best_checkpoint})
    return row


def summarise(path: str, *, dims: tuple[int, ...], folds: tuple[int, ...], plans_labels: list[str]) -> pd.DataFrame:
    """The summary table: the trial rows of every (dim, fold), then per dim a ``mean`` and a ``std`` row."""
    rows = []
    for dim in dims:
        dim_rows = [trial_row(storage.join(path, fold_run_name(dim, fold)), dim=dim, fold=fold,
                              class_names=plans_labels) for fold in folds]
        numeric = pd.DataFrame(dim_rows).drop(columns=["dim", "fold", "best_checkpoint"]).astype(float)
        rows += dim_rows
        for stat in ("mean", "std"):
            values = getattr(numeric, stat)(ddof=0) if stat == "std" else numeric.mean()
            rows.append({"dim": f"{dim}d", "fold": stat, **values.to_dict(), "best_checkpoint": ""})
    return pd.DataFrame(rows)


def write_summary(table: pd.DataFrame, path: str) -> None:
    """``cv_summary.csv`` (the table) and ``cv_summary.json`` (trials, and mean/std per dim) in ``path``."""
    storage.write_text(storage.join(path, SUMMARY_CSV), table.to_csv(index=False))
    trials = table[~table["fold"].isin(["mean", "std"])]
    stats = table[table["fold"].isin(["mean", "std"])]
    per_dim: dict[str, dict] = {}
    for _, row in stats.iterrows():
        values = row.drop(["dim", "fold", "best_checkpoint"]).to_dict()
        per_dim.setdefault(row["dim"], {})[row["fold"]] = _finite(values)
    storage.write_json(storage.join(path, SUMMARY_JSON),
                       {"trials": [_finite(r) for r in trials.to_dict(orient="records")], "per_dim": per_dim,
                        "cost": table.attrs.get("cost")})


def _finite(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def format_table(table: pd.DataFrame) -> str:
    """The printed table: Dice columns per fold, and one ``mean ± std`` row per dim."""
    shown = [c for c in table.columns if c.startswith("dice_")] + ["best_epoch", "epochs", "seconds"]
    lines = []
    for dim, group in table.groupby("dim", sort=False):
        trials = group[~group["fold"].isin(["mean", "std"])].set_index("fold")[shown]
        mean, std = (group[group["fold"] == s][shown].iloc[0] for s in ("mean", "std"))
        text = trials.astype(float).round(3).astype(str)
        text.loc["mean ± std"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std)]
        lines += [f"{dim} cross-validation ({len(trials)} folds)", text.to_string(), ""]
    if table.attrs.get("cost"):
        lines.append(cost_line(table.attrs["cost"], int((~table["fold"].isin(["mean", "std"])).sum())))
    return "\n".join(lines)
