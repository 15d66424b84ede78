"""The best configuration, as nnU-Net v2's ``find_best_configuration`` chooses it, from cross-validation predictions:
2D, 3D and (when both exist) their ensemble (probabilities averaged) are compared by mean Dice over the CV cases;
for the winner, each class keeps only its largest connected component where that raises the class's Dice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnunet_ray.data.nifti import read_label
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.evaluation.metrics import case_dice
from nnunet_ray.inference.postprocess import keep_largest_component
from nnunet_ray.runs.best_configuration import BestConfiguration


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
    scores = [case_dice(torch.from_numpy(preds[i].astype(np.int64)), torch.from_numpy(labels[i].astype(np.int64)),
                        n_classes).numpy() for i in preds]
    return np.mean(scores, axis=0)


def best_configuration(predictions: Path, rows: list[dict], dataset) -> BestConfiguration:
    """The best configuration of the CV predictions in ``predictions`` (a local ``cv_predictions`` folder: per run
    ``<case>.nii.gz`` and ``<case>.npz`` probabilities) of the runs ``rows`` (``run``, ``dim``, ``fold``), scored
    against the labels of ``dataset``'s training cases."""
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
    return BestConfiguration(configuration=name, dims=tuple(chosen),
                             mean_dice={k: float(v[2].mean()) for k, v in scores.items()},
                             largest_component=tuple(keep),
                             dice_postprocessed=float(_mean_dice(post, labels, n_classes).mean()))
