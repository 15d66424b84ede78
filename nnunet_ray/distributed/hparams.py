"""HParams for TensorBoard: each ended trial's hyper-parameters with its final metrics, next to its scalars, so
``tensorboard --logdir RESULTS/NAME`` compares folds, dims and sweep trials side by side."""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

from ray import tune

from nnunet_ray.data import storage
from nnunet_ray.data.local_views import writable_folder
from nnunet_ray.distributed.fold_run import SCORE
from nnunet_ray.training.logs import TB_DIR

HPARAMS_SUFFIX = ".hparams"  # the events file holding a trial's HParams, rewritten when the trial ends again


def short_value(value: Any) -> str:
    """A swept value as it appears in trial names and HParams: ``64x96x80``, ``0.003``."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class HParamsCallback(tune.Callback):
    """Writes each ended trial's hyper-parameters with its final metrics into ``<trial>/tensorboard`` (HParams
    tab), next to its scalars, so ``tensorboard --logdir RESULTS/NAME`` compares folds, dims and sweep trials.

    ``experiment``: the experiment folder, a path or URI (Tune reports trial paths inside its storage filesystem,
    without a URI's scheme, credentials and options)."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        write_hparams(storage.join(self.experiment, PurePosixPath(trial.path).name), trial.config,
                      trial.last_result or {})


def write_hparams(trial_dir: str, config: dict, result: dict) -> None:
    """One HParams record for a trial: dim, fold and swept values; best Dice, last score, epochs."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    params = {"dim": int(config["dim"]), "fold": int(config["fold"])}
    params.update({k: short_value(v) if isinstance(v, (list, tuple)) else v for k, v in config["sweep"].items()})
    metrics = {"hparam/best_dice": result.get("best_dice"), "hparam/score": result.get(SCORE),
               "hparam/epochs": (result.get("epoch", -1) or 0) + 1}
    metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    tensorboard = storage.join(trial_dir, TB_DIR)
    for old in storage.list_names(tensorboard):
        if old.endswith(HPARAMS_SUFFIX):
            storage.delete(storage.join(tensorboard, old))
    with writable_folder(tensorboard) as folder:
        writer = SummaryWriter(str(folder), filename_suffix=HPARAMS_SUFFIX)
        for summary in hparams(params, metrics):
            writer.file_writer.add_summary(summary)  # type: ignore[attr-defined]  # torch types it None (set in __init__)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value)
        writer.close()
