"""The members of an ensemble: checkpoints named on the command line, or found in experiment folders.

``--models`` takes checkpoint directories and/or folders holding training runs (one run, a cross-validation
experiment, a results root): under a folder, every training run folder's best checkpoint is a member, so five
folds of 2D and 3D give ten members. When the folder holds a ``best_configuration.json`` (``evaluate --cv``), only
the runs of the chosen configuration (2D, 3D or both) are taken. A member is loaded once on the driver (weights,
plans, run config) and shipped to the predicting processes as it is, so they need no access to the results folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnunet_ray.config import ConfigError
from nnunet_ray.model.unet import build_unet
from nnunet_ray.planning.schema import Plans, load_plans
from nnunet_ray.runs.best_configuration import load_best_configuration
from nnunet_ray.runs.checkpoint import (
    MODEL_FILE,
    best_checkpoint,
    is_checkpoint,
    is_epoch_dir_name,
    load_file,
    model_kwargs,
    read_config,
)
from nnunet_ray.runs.run_config import RunConfig


@dataclass(frozen=True)
class Member:
    """One trained network of an ensemble.

    Attributes:
        path: the checkpoint directory it was loaded from.
        plans: the plans it was trained with (patch size, spacing, classes, ...).
        config: its run's config.json (model options, fold, the folds' hash).
        weights: the state dict, CPU tensors.
    """

    path: str
    plans: Plans
    config: RunConfig
    weights: dict[str, torch.Tensor]

    # The only place prediction reads plans fields: one edit here when the plans format changes.
    @property
    def dim(self) -> int:
        return self.plans.dim

    @property
    def n_classes(self) -> int:
        return self.plans.n_classes

    @property
    def in_channels(self) -> int:
        return self.plans.in_channels

    @property
    def patch_size(self) -> list[int]:
        """(Z, Y, X) in 3D, (Y, X) for a slice-wise 2D network."""
        return list(self.plans.patch_size)

    @property
    def labels(self) -> dict[str, str]:
        """Class index (a string, as in JSON) -> name."""
        return dict(self.plans.labels)

    @property
    def preprocessing_key(self) -> str:
        """Equal for members whose cases are preprocessed identically (they share preprocessing and restore)."""
        return self.plans.preprocessing_hash

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """The network in eval mode on ``device``."""
        model = build_unet(self.plans, **model_kwargs(self.config.train))
        model.load_state_dict(self.weights)
        return model.to(device).eval()

    def describe(self) -> dict[str, Any]:
        """What predict.json records about the member."""
        return {"path": self.path, "network_hash": self.plans.network_hash,
                "preprocessing_hash": self.plans.preprocessing_hash, "dim": self.dim,
                "fold": self.config.train.fold, "dataset": self.plans.dataset}


def load_member(directory: str | Path) -> Member:
    """Read a checkpoint directory into a :class:`Member` (weights load with ``weights_only=True``)."""
    directory = Path(directory).resolve()
    return Member(path=str(directory), plans=load_plans(directory),
                  config=read_config(directory),
                  weights=load_file(directory / MODEL_FILE))


def run_folders(root: str | Path) -> list[Path]:
    """Every training run folder under ``root`` (``root`` included): folders with a ``best/`` or ``epoch_*``
    checkpoint. Checkpoint folders themselves are not searched."""
    runs = []
    for current, dirs, _ in os.walk(root):
        children = [d for d in dirs if (d == "best" or is_epoch_dir_name(d)) and is_checkpoint(Path(current, d))]
        if children:
            runs.append(Path(current))
        dirs[:] = sorted(d for d in dirs if d not in children and not d.startswith("."))
    return sorted(runs)


def find_checkpoints(paths: Sequence[str | Path], *, flag: str = "--models") -> list[Path]:
    """Resolve ``--models`` entries into checkpoint directories, in a stable order.

    Args:
        paths: checkpoint directories, training run folders or experiment folders holding runs.
        flag: named in errors.

    Returns:
        Distinct checkpoint directories (absolute).

    Raises:
        ConfigError: no path given, a path is missing, or a folder holds neither a checkpoint nor a run.
    """
    if not paths:
        raise ConfigError(f"{flag}: give at least one checkpoint or experiment folder")
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if not path.is_dir():
            raise ConfigError(f"{flag}: {path} is not a folder")
        if is_checkpoint(path):
            found.append(path.resolve())
            continue
        bests = [best for run in run_folders(path) if (best := best_checkpoint(run)) is not None]
        dims = chosen_dims(path)
        if dims is not None:  # the experiment's cross-validation chose these configurations
            bests = [b for b in bests if load_plans(b).dim in dims]
        if not bests:
            raise ConfigError(f"{flag}: {path} holds no checkpoint (model.pt, config.json, plans.json) and no "
                              "training run with one")
        found.extend(b.resolve() for b in bests)
    return list(dict.fromkeys(found))


def chosen_dims(folder: str | Path) -> list[int] | None:
    """The dims cross-validation chose for this experiment folder, or None when it has not chosen."""
    best = load_best_configuration(folder)
    return None if best is None else list(best.dims)


def check_compatible(members: Sequence[Member], *, flag: str = "--models") -> None:
    """Members can only be averaged when they agree on the classes and the input channels, and were trained on the
    same folds (the folds of one cross-validation; checkpoints from before the splits hash was recorded pass).

    Raises:
        ConfigError: naming the first member that differs from the first one.
    """
    first = members[0]
    for member in members[1:]:
        for key in ("n_classes", "in_channels"):
            if getattr(member, key) != getattr(first, key):
                raise ConfigError(f"{flag}: {member.path} has {key} {getattr(member, key)} but {first.path} has "
                                  f"{getattr(first, key)}; an ensemble needs the same classes and channels")
    check_same_splits([(member.path, member.config.splits_hash) for member in members], flag=flag)


def check_same_splits(runs: Sequence[tuple[str, str | None]], *, flag: str) -> None:
    """Runs trained on different splits.json folds (``splits_hash`` in their config.json) are refused together.

    Args:
        runs: (checkpoint or run, the splits hash its config.json records) pairs; None (recorded before the hash
            existed) is not compared.

    Raises:
        ConfigError: naming ``flag`` and two runs trained on different folds.
    """
    recorded = [(where, splits_hash) for where, splits_hash in runs if splits_hash]
    for where, splits_hash in recorded[1:]:
        if splits_hash != recorded[0][1]:
            raise ConfigError(f"{flag}: {where} was trained on other folds (splits hash {splits_hash}) than "
                              f"{recorded[0][0]} (splits hash {recorded[0][1]}); ensemble members must come from "
                              "one cross-validation")
