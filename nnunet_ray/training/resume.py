"""Resuming a run: which options may change, and the check of the others against the run's checkpoint.

``--resume-training`` rebuilds the model, optimizer and progress from the last checkpoint (nanoGPT's rule: the
model arguments come from what was saved). An option that defines the network or the optimizer state cannot
change, or every worker would fail on the state dict and be retried ``--max-failures`` times; ``check_resume``
refuses it on the driver, before any worker starts. Every ``TrainConfig`` field is in exactly one of the two
tables below (a test enforces it), so a new option has to say which it is.

The folds are fixed too: each checkpoint's config.json also records ``splits_hash`` (``data.folds.splits_hash`` of
the splits.json the run trained on, stamped by ``record_splits_hash``), and a run is only resumed on the same folds
(``check_splits``). Runs recorded before the hash existed have none and are accepted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from nnunet_ray.config import ConfigError, TrainConfig, flag_name
from nnunet_ray.data import storage
from nnunet_ray.data.folds import parse_splits, splits_hash, splits_location
from nnunet_ray.data.records import RecordError
from nnunet_ray.planning.schema import Plans, PlansError, load_plans
from nnunet_ray.runs.checkpoint import latest_checkpoint
from nnunet_ray.runs.run_config import RunConfig, load_run_config

logger = logging.getLogger(__name__)


# Options fixed for the life of a run: what each defines.
FIXED_ON_RESUME: dict[str, str] = {
    "dim": "the network's dimensionality",
    "fold": "the validation cases the best Dice is measured on",
    "norm": "the network's normalisation layers",
    "residual": "the network's encoder blocks",
    "deep_supervision": "the network's auxiliary heads",
    "deep_supervision_scheme": "the network's auxiliary heads",
    "negative_slope": "the activation the weights were trained with",
    "optimizer": "the stored optimizer state",
    "patch_size": "the network's patch, kernels, strides and filters",
}
# Options that may change on resume; a non-empty note is logged when one does.
FREE_ON_RESUME: dict[str, str] = {
    "learning_rate": "applies from the next epoch (the schedule restarts from the new base rate; the optimizer's "
                     "moments are kept)",
    "scheduler": "applies from the next epoch (a plateau schedule keeps its stored state)",
    "max_epochs": "", "min_epochs": "", "patience": "counted from the stored best epoch",
    "data": "", "results": "", "experiment": "", "gpus": "", "workers": "", "cpus_per_worker": "", "dali_threads": "",
    "amp": "", "amp_dtype": "", "benchmark": "", "weight_decay": "", "momentum": "", "lr_milestones": "", "factor": "",
    "lr_patience": "", "warmup": "", "lr_warmup": "", "gradient_clip_val": "", "skip_first_n_eval": "",
    "train_batches": "", "val_cases": "", "batch_size": "", "val_batch_size": "", "nvol": "", "oversampling": "",
    "overlap": "", "blend": "", "tta": "", "focal": "changes the training loss from the next epoch",
    "sync_batchnorm": "", "seed": "", "resume_training": "", "max_failures": "", "image_every": "", "address": "",
    "val_every": "", "checkpoint_every": "", "max_time": "counts from this attempt's start", "val_scores_on": "",
    "max_preemption_failures": "", "checkpoint_upload": "", "placement": "", "nesterov": "",
    # A recipe is its options' values, each checked here on its own (its optimizer and heads are fixed).
    "recipe": "", "explicit": "",
}


def _differs(saved: Any, current: Any) -> bool:
    return json.loads(json.dumps(saved)) != json.loads(json.dumps(current))


def check_resume(cfg: TrainConfig, plans: Plans, run_dir: str | Path) -> None:
    """Refuse to resume ``run_dir`` with options or plans that differ from its last checkpoint's.

    Args:
        cfg: the options of the resumed run.
        plans: the plans in ``cfg.data``.
        run_dir: the run's folder (nothing is checked when it holds no checkpoint yet).

    Raises:
        ConfigError: naming the first fixed option that differs (or ``--data`` for other plans or other folds).
    """
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return
    saved = _saved_config(checkpoint, Path(run_dir).name)
    before, current = dataclasses.asdict(saved.train), dataclasses.asdict(cfg)
    name = Path(run_dir).name
    for option, meaning in FIXED_ON_RESUME.items():
        if _differs(before[option], current[option]):
            raise ConfigError(f"{flag_name(option)}: {current[option]!r}, but run {name!r} was trained with "
                              f"{before[option]!r} ({meaning} cannot change on resume); start a new --experiment "
                              "instead")
    _check_plans(plans, checkpoint, name)
    check_splits(saved.splits_hash, data_splits_hash(cfg.data), name)
    for option, note in FREE_ON_RESUME.items():
        if note and _differs(before[option], current[option]):
            logger.warning("%s: %r (was %r) %s", flag_name(option), current[option], before[option], note)


def _saved_config(checkpoint: Path, name: str) -> RunConfig:
    try:
        return load_run_config(checkpoint)
    except RecordError as err:
        raise ConfigError(f"--resume-training: run {name!r} has an unreadable checkpoint ({err})") from err


def _check_plans(plans: Plans, checkpoint: Path, name: str) -> None:
    try:
        saved = load_plans(checkpoint)
    except PlansError as err:
        raise ConfigError(f"--resume-training: run {name!r} has an unreadable checkpoint ({err})") from err
    if (saved.network_hash, saved.preprocessing_hash) != (plans.network_hash, plans.preprocessing_hash):
        raise ConfigError(f"--data: its plans differ from those run {name!r} was trained with (patch "
                          f"{list(saved.patch_size)} -> {list(plans.patch_size)}, network hash {saved.network_hash} "
                          f"-> {plans.network_hash}); start a new --experiment instead")


def data_splits_hash(data: str | Path) -> str | None:
    """``splits_hash`` of ``<data>/splits.json`` (a folder path or URI), or None when it has none.

    Raises:
        ConfigError: the file is there but is not a splits file (naming it).
    """
    location = splits_location(data)
    try:
        text = storage.read_text(location)
    except FileNotFoundError:
        return None
    try:
        return splits_hash(parse_splits(text, storage.display(location)))
    except ValueError as err:
        raise ConfigError(f"{flag_name('data')}: {err}") from err


def check_splits(recorded: str | None, current: str | None, name: str) -> None:
    """Refuse to continue run ``name`` on other folds than the ones its checkpoint recorded.

    Args:
        recorded: the ``splits_hash`` in the run's checkpoint config.json (None: recorded before it existed,
            accepted).
        current: ``data_splits_hash`` of the data the run would continue on (None: no splits.json to compare).

    Raises:
        ConfigError: naming ``--data``, the run and both hashes.
    """
    if recorded is not None and current is not None and recorded != current:
        raise ConfigError(f"{flag_name('data')}: its splits.json (hash {current}) is not the one run {name!r} was "
                          f"trained on (hash {recorded}): its validation cases may have been training cases; "
                          "restore that splits.json, or start a new --experiment")
