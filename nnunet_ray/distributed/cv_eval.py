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

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch

from nnunet_ray.config import ConfigError, EvaluateConfig, PredictConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.folds import load_splits, splits_hash, splits_location
from nnunet_ray.distributed.case_inputs import Inputs, labelled_dataset
from nnunet_ray.distributed.predict import local_models, predict_folders
from nnunet_ray.evaluation.report import METRICS, evaluate_folders
from nnunet_ray.inference.members import check_same_splits, run_folders
from nnunet_ray.runs.checkpoint import CONFIG_FILE, SPLITS_HASH_KEY, STATE_FILE, best_checkpoint, load_file

logger = logging.getLogger(__name__)

RESULT = "cv_original_space"
PREDICTIONS = "cv_predictions"  # <experiment>/cv_predictions/<run>/


def _fold_runs(experiment: str) -> list[tuple[str, str, dict, float | None]]:
    """(run name, best checkpoint's location, its config, its in-training Dice) of every run under ``experiment``."""
    runs = []
    with local_models([experiment], flag="cv") as copies:
        local = copies[0][1]
        for run in run_folders(local):
            checkpoint = best_checkpoint(run)
            if checkpoint is not None:
                name = "_".join(run.relative_to(local).parts) or storage.basename(experiment)
                runs.append((name, storage.join(experiment, *checkpoint.relative_to(local).parts),
                             json.loads((checkpoint / CONFIG_FILE).read_text()), _training_dice(checkpoint)))
    if not runs:
        raise ConfigError(f"{flag_name('cv')}: {storage.display(experiment)} holds no training run with a checkpoint")
    return runs


def _training_dice(checkpoint: Path) -> float | None:
    """The validation mean Dice the run measured during training (preprocessed grid) at its best epoch."""
    if not (checkpoint / STATE_FILE).is_file():
        return None
    progress = load_file(checkpoint / STATE_FILE).get("progress", {})
    best = progress.get("best_dice")
    return None if best is None or not np.isfinite(best) else float(best)


def _validation_cases(config: dict, data: str, inputs: Inputs, name: str) -> Inputs:
    """Run ``name``'s validation cases among the raw dataset's training cases ``inputs`` (the dataset ``data``)."""
    splits_path = storage.display(splits_location(config["data"]))
    fold = int(config["fold"])
    try:
        splits = load_splits(config["data"])
        ids = set(splits[fold]["val"])
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"{flag_name('cv')}: run {name}: cannot read fold {fold} of {splits_path}: {exc}") from exc
    recorded, now = config.get(SPLITS_HASH_KEY), splits_hash(splits)
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
        check_same_splits([(name, config) for name, _, config, _ in runs], flag=flag_name("cv"))
        rows = _predict_and_score(cfg, experiment, runs, dataset, inputs)
        result = {"runs": rows, "configurations": _per_configuration(rows), "nsd_tolerance_mm": cfg.nsd_tolerance,
                  "best": choose_configuration(experiment, rows, dataset)}
    storage.write_json(storage.join(experiment, f"{RESULT}.json"), result)
    storage.write_text(storage.join(experiment, f"{RESULT}.csv"), _csv(rows))
    return result


def _predict_and_score(cfg: EvaluateConfig, experiment: str, runs: list, dataset, inputs: Inputs) -> list[dict]:
    """Every run's validation cases predicted (one actor pool for all) and scored against the labels of ``dataset``
    (on this machine); one row per run."""
    requests, rows = [], []
    for name, checkpoint, config, _ in runs:
        logger.info("%s: fold %s with %s", name, config["fold"], storage.display(checkpoint))
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
        # This fold's validation cases only: labelsTr also holds the other folds' cases.
        scores = evaluate_folders(predict.out, dataset.root / "labelsTr", tolerance=cfg.nsd_tolerance,
                                  cases=[c.case_id for c in cases.cases])
        rows.append({"run": name, "dim": config.get("dim"), "fold": config["fold"], "cases": scores["n_cases"],
                     "training_dice": training_dice, **scores["mean"]})
    return rows


def _per_configuration(rows: list[dict]) -> dict:
    out = {}
    for dim in sorted({r["dim"] for r in rows}, key=str):
        mine = [r for r in rows if r["dim"] == dim]
        trained = [r["training_dice"] for r in mine if r["training_dice"] is not None]
        out[f"{dim}d"] = {"folds": len(mine), "training_dice": float(np.mean(trained)) if trained else None,
                          **{k: float(np.mean([r[k] for r in mine])) for k in METRICS}}
    return out


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["run", "dim", "fold", "cases", "training_dice", *METRICS],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def cv_table(result: dict) -> str:
    """Printed table: per run and per configuration, in-training Dice next to the original-space metrics."""
    lines = [f"{'run':<32}{'train Dice':>11}{'Dice':>8}{'HD95 mm':>10}{'NSD':>8}"]
    named = [(r["run"], r) for r in result["runs"]] + [(f"mean {k}", v) for k, v in result["configurations"].items()]
    for name, r in named:
        trained = "-" if r["training_dice"] is None else f"{r['training_dice']:.4f}"
        lines.append(f"{name:<32}{trained:>11}{r['dice']:>8.4f}{r['hd95']:>10.2f}{r['nsd']:>8.4f}")
    best = result.get("best")
    if best:
        lines.append(f"best configuration: {best['configuration']} (mean Dice " + ", ".join(
            f"{k} {v:.4f}" for k, v in best["mean_dice"].items()) + "); largest component kept for classes "
            f"{best['largest_component'] or 'none'} -> {best['dice_postprocessed']:.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- best configuration

BEST = "best_configuration.json"


def _case_labels(dataset, rows: list[dict], predictions: Path) -> dict[str, Path]:
    """Raw label file of every case predicted in the CV (``predictions``: a local cv_predictions folder)."""
    by_id = {c.case_id: c.label for c in dataset.training}
    ids = {p.name[: -len(".nii.gz")] for r in rows for p in (predictions / r["run"]).glob("*.nii.gz")}
    return {i: by_id[i] for i in sorted(ids)}


def _candidate_predictions(predictions: Path, rows: list[dict], dims: tuple) -> dict[str, np.ndarray]:
    """Case id -> predicted class map of the configuration made of ``dims`` (several: probabilities averaged)."""
    folders = {d: {r["fold"]: predictions / r["run"] for r in rows if r["dim"] == d} for d in dims}
    folds = set.intersection(*(set(f) for f in folders.values()))
    preds = {}
    for fold in sorted(folds):
        for path in sorted(folders[dims[0]][fold].glob("*.npz")):
            case_id = path.name[: -len(".npz")]
            probs = sum(np.load(folders[d][fold] / path.name)["probabilities"].astype(np.float32) for d in dims)
            preds[case_id] = np.argmax(probs, axis=0).astype(np.uint8)
    return preds


def _mean_dice(preds: dict[str, np.ndarray], labels: dict[str, np.ndarray], n_classes: int) -> np.ndarray:
    """(n_classes - 1,) per-class Dice averaged over the cases (the reference's absent-class rule)."""
    from nnunet_ray.evaluation.metrics import case_dice

    scores = [case_dice(torch.from_numpy(preds[i].astype(np.int64)), torch.from_numpy(labels[i].astype(np.int64)),
                        n_classes).numpy() for i in preds]
    return np.mean(scores, axis=0)


def choose_configuration(experiment: str, rows: list[dict], dataset) -> dict:
    """Compare each dim and the ensemble of all dims on the CV cases, then per class whether keeping only the
    largest connected component helps; write ``best_configuration.json`` into the experiment folder.

    Returns:
        ``{"configuration": "3d" | "2d" | "2d+3d", "dims", "mean_dice": {candidate: Dice}, "largest_component":
        [classes], "dice_postprocessed"}``.
    """
    with storage.local_copy(storage.join(experiment, PREDICTIONS)) as predictions:
        best = _best_configuration(predictions, rows, dataset)
    storage.write_json(storage.join(experiment, BEST), best)
    return best


def _best_configuration(predictions: Path, rows: list[dict], dataset) -> dict:
    """``choose_configuration`` on a local cv_predictions folder."""
    from nnunet_ray.data.nifti import read_label
    from nnunet_ray.data.types import CaseFiles
    from nnunet_ray.inference.postprocess import keep_largest_component

    labels = {i: read_label(CaseFiles(i, (), label=p)).array[0]
              for i, p in _case_labels(dataset, rows, predictions).items()}
    n_classes = dataset.n_classes
    dims = tuple(sorted({r["dim"] for r in rows}))
    candidates = [(d,) for d in dims] + ([dims] if len(dims) > 1 else [])
    scores = {}
    for candidate in candidates:
        preds = _candidate_predictions(predictions, rows, candidate)
        if preds:
            scores["+".join(f"{d}d" for d in candidate)] = (candidate, preds, _mean_dice(preds, labels, n_classes))
    name, (chosen, preds, per_class) = max(scores.items(), key=lambda kv: float(kv[1][2].mean()))
    keep = []
    for c in range(1, n_classes):
        cleaned = {i: keep_largest_component(p, [c]) for i, p in preds.items()}
        if _mean_dice(cleaned, labels, n_classes)[c - 1] > per_class[c - 1]:
            keep.append(c)
    post = {i: keep_largest_component(p, keep) for i, p in preds.items()}
    best = {"configuration": name, "dims": list(chosen),
            "mean_dice": {k: float(v[2].mean()) for k, v in scores.items()}, "largest_component": keep,
            "dice_postprocessed": float(_mean_dice(post, labels, n_classes).mean())}
    return best
