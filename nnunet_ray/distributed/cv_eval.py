"""Cross-validation in the original image space: ``evaluate_cv(cfg)``.

    nnunet-ray evaluate --cv RESULTS/EXPERIMENT --data RAW_DATASET [--tta] [--actors N]

In-training validation Dice is measured on the preprocessed grid (as the reference does). This predicts every
fold's validation cases from the raw images with that fold's best checkpoint (one Ray actor pool for all folds,
each actor holding every fold's network),
restores them to the original grid and scores them against the raw labels (Dice, HD95, NSD), so the numbers are
the ones a user of the model would see. Every training run folder under the experiment is one fold of one
configuration; its fold and preprocessed folder (``splits.json``) come from the checkpoint's config.

Writes ``<experiment>/cv_predictions/<run>/`` (label maps, float16 probabilities, ``predict.json``,
``summary.json``/``.csv``) and ``<experiment>/cv_original_space.json`` + ``.csv``: per run the in-training best Dice
next to the original-space Dice, HD95 and NSD, and their means per configuration (dim). The experiment may be a
URI (``s3://``): its checkpoints and predictions are read through temporary local copies, outputs written there.
So may the raw dataset: the driver downloads its training labels, each actor the images of the cases it predicts.

Then the best configuration, as nnU-Net v2 chooses it: 2D, 3D and (when both exist) their ensemble (probabilities
averaged) are compared by mean Dice over the CV cases; for the winner, each class keeps only its largest connected
component where that raises the class's Dice. The choice goes to ``<experiment>/best_configuration.json``, which
``nnunet-ray predict --models <experiment>`` follows (``--postprocess`` applies the chosen step).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from nnunet_ray.config import ConfigError, EvaluateConfig, PredictConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.folds import fold_cases, load_splits, splits_hash, splits_location
from nnunet_ray.data.local_views import labels_by_case_id, local_copy
from nnunet_ray.data.prediction_inputs import Inputs, labelled_dataset
from nnunet_ray.distributed.predict import local_models, predict_folders
from nnunet_ray.evaluation.configuration import best_configuration
from nnunet_ray.evaluation.cv_summary import per_configuration, rows_csv
from nnunet_ray.evaluation.report import evaluate_folders
from nnunet_ray.inference.members import check_same_splits, run_folders
from nnunet_ray.runs.best_configuration import save_best_configuration
from nnunet_ray.runs.checkpoint import best_checkpoint, read_config, read_progress
from nnunet_ray.runs.run_config import RunConfig

logger = logging.getLogger(__name__)

RESULT = "cv_original_space"
PREDICTIONS = "cv_predictions"  # <experiment>/cv_predictions/<run>/


def _fold_runs(experiment: str) -> list[tuple[str, str, RunConfig, float | None]]:
    """(run name, best checkpoint's location, its config, its in-training Dice) of every run under ``experiment``."""
    runs = []
    with local_models([experiment], flag="cv") as copies:
        local = copies[0][1]
        for run in run_folders(local):
            checkpoint = best_checkpoint(run)
            if checkpoint is not None:
                name = "_".join(run.relative_to(local).parts) or storage.basename(experiment)
                runs.append((name, storage.join(experiment, *checkpoint.relative_to(local).parts),
                             read_config(checkpoint), _training_dice(checkpoint)))
    if not runs:
        raise ConfigError(f"{flag_name('cv')}: {storage.display(experiment)} holds no training run with a checkpoint")
    return runs


def _training_dice(checkpoint: Path) -> float | None:
    """The validation mean Dice the run measured during training (preprocessed grid) at its best epoch."""
    best = read_progress(checkpoint).get("best_dice")
    return None if best is None or not np.isfinite(best) else float(best)


def _validation_cases(config: RunConfig, data: str, inputs: Inputs, name: str) -> Inputs:
    """Run ``name``'s validation cases among the raw dataset's training cases ``inputs`` (the dataset ``data``)."""
    splits_path = storage.display(splits_location(config.train.data))
    fold = config.train.fold
    try:
        splits = load_splits(config.train.data)
        ids = set(fold_cases(splits, fold)[1])
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"{flag_name('cv')}: run {name}: cannot read fold {fold} of {splits_path}: {exc}") from exc
    recorded, now = config.splits_hash, splits_hash(splits)
    if recorded and recorded != now:  # runs recorded before the hash existed have none
        raise ConfigError(f"{flag_name('cv')}: run {name} was trained on other folds (splits hash {recorded}) than "
                          f"{splits_path} holds now (hash {now}): its validation cases there may be training cases")
    cases = [c for c in inputs.cases if c.case_id in ids]
    if len(cases) != len(ids):
        missing = sorted(ids - {c.case_id for c in cases})
        raise ConfigError(f"{flag_name('data')}: {storage.display(data)} lacks validation cases of run {name}: "
                          f"{missing[:5]}")
    return inputs.only(cases)


def evaluate_cv(cfg: EvaluateConfig) -> dict:
    """Predict and score every fold's validation cases in the original space; see the module docstring.

    ``--data`` may be a URI: the driver downloads its training labels only, each actor the images it predicts.

    Returns:
        ``{"runs": [{"run", "dim", "fold", "cases", "training_dice", "dice", "hd95", "nsd"}], "configurations":
        {"<dim>d": means over its folds}}``, also written to ``cv_original_space.json`` / ``.csv``.
    """
    cfg.validate()
    experiment, data = storage.absolute(cfg.cv), storage.absolute(cfg.data)
    with labelled_dataset(data) as (dataset, inputs):
        runs = _fold_runs(experiment)
        check_same_splits([(name, config.splits_hash) for name, _, config, _ in runs], flag=flag_name("cv"))
        rows = _predict_and_score(cfg, experiment, runs, dataset, inputs)
        result = {"runs": rows, "configurations": per_configuration(rows), "nsd_tolerance_mm": cfg.nsd_tolerance,
                  "best": choose_configuration(experiment, rows, dataset)}
    storage.write_json(storage.join(experiment, f"{RESULT}.json"), result)
    storage.write_text(storage.join(experiment, f"{RESULT}.csv"), rows_csv(rows))
    return result


def _predict_and_score(cfg: EvaluateConfig, experiment: str, runs: list, dataset, inputs: Inputs) -> list[dict]:
    """Every run's validation cases predicted (one actor pool for all) and scored against the labels of ``dataset``
    (on this machine); one row per run."""
    requests, rows = [], []
    for name, checkpoint, config, _ in runs:
        logger.info("%s: fold %s with %s", name, config.train.fold, storage.display(checkpoint))
        predict = PredictConfig(models=(checkpoint,), input=storage.absolute(cfg.data), out=storage.join(
            experiment, PREDICTIONS, name), **dataclasses.asdict(cfg.window()), actors=cfg.actors,
            address=cfg.address, save_probabilities=True, overwrite=cfg.overwrite).validate()
        requests.append((predict, _validation_cases(config, cfg.data, inputs, name)))
    # One actor pool for every fold: each case is predicted by its own fold's best checkpoint.
    summaries = predict_folders(requests, flags=("data", "cv"), out_root=storage.join(experiment, PREDICTIONS))
    for (name, _, config, training_dice), (predict, cases), summary in zip(runs, requests, summaries):
        if not summary.ok:
            raise ConfigError(f"{flag_name('cv')}: run {name}: {len(summary.failed)} validation case(s) failed, "
                              f"e.g. {next(iter(summary.failed.values()))}")
        ids = {c.case_id for c in cases.cases}  # this fold's validation cases, whatever their label files are named
        with labels_by_case_id(c for c in dataset.training if c.case_id in ids) as labels:
            scores = evaluate_folders(predict.out, labels, tolerance=cfg.nsd_tolerance, cases=sorted(ids))
        rows.append({"run": name, "dim": config.train.dim, "fold": config.train.fold, "cases": scores["n_cases"],
                     "training_dice": training_dice, **scores["mean"]})
    return rows


# ---------------------------------------------------------------------------------------- best configuration

def choose_configuration(experiment: str, rows: list[dict], dataset) -> dict:
    """Compare each dim and the ensemble of all dims on the CV cases, then per class whether keeping only the
    largest connected component helps; write ``best_configuration.json`` into the experiment folder.

    Returns:
        ``{"configuration": "3d" | "2d" | "2d+3d", "dims", "mean_dice": {candidate: Dice}, "largest_component":
        [classes], "dice_postprocessed"}``.
    """
    with local_copy(storage.join(experiment, PREDICTIONS)) as predictions:
        best = best_configuration(predictions, rows, dataset)
    save_best_configuration(experiment, best)
    return best.to_json()


