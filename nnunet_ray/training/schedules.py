"""Learning-rate schedules, stepped once per epoch: none / multistep / cosine / poly / plateau, times a linear warm-up.

The reference (NVIDIA nnU-Net v21.02/05, ``models/nn_unet.py::NNUnet.configure_optimizers``) uses torch's
MultiStepLR(steps, gamma=factor),
CosineAnnealingLR(T_max=max_epochs) and ReduceLROnPlateau(factor, patience, monitor val_loss). ``poly`` is nnU-Net
v2's ``PolyLRScheduler`` (nnunetv2/training/lr_scheduler/polylr.py): ``(1 - epoch / T) ** 0.9``, stepped at the start
of each epoch as nnU-Net v2 steps it, so an epoch trains at one rate and a resumed run recomputes it exactly. Here the
epoch-indexed schedules are a pure function of the epoch and the horizon ``T``; only the plateau schedule has state,
which the checkpoint stores.

The horizon of ``cosine`` and ``poly`` is ``--max-epochs``, or with ``--max-time`` the number of epochs the budget
holds, re-estimated every epoch from the epochs measured so far (``time_horizon``), so a time-boxed run reaches the
end of its decay at its last epoch instead of decaying over 10,000 epochs it never trains. (torch's ``PolynomialLR``
fixes ``total_iters`` up front, which a time budget cannot.)

lr(epoch) = learning_rate * warmup(epoch) * decay(epoch, T), with warmup(e) = min(1, (e + 1) / warmup).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SCHEDULERS = ("none", "multistep", "cosine", "poly", "plateau")
POLY_EXPONENT = 0.9  # nnU-Net v2's
PLATEAU_THRESHOLD = 1e-4  # relative improvement that counts (torch ReduceLROnPlateau's default)


def warmup_factor(epoch: int, warmup: int) -> float:
    """Linear warm-up: 1/warmup at epoch 0, reaching 1 at epoch ``warmup - 1``; 1 when ``warmup`` is 0."""
    return 1.0 if warmup <= 0 else min(1.0, (epoch + 1) / warmup)


def decay_factor(epoch: int, *, scheduler: str, steps: Sequence[int] = (), factor: float = 0.3,
                 max_epochs: int = 10000) -> float:
    """Multiplier of the base LR for the epoch-indexed schedules.

    Args:
        epoch: 0-based epoch.
        scheduler: ``none`` or ``plateau`` (both 1 here; plateau's state lives in ``LRSchedule``), ``multistep``
            (``factor ** number of milestones <= epoch``), ``cosine`` (half cosine from 1 to 0 over max_epochs) or
            ``poly`` (``(1 - epoch / max_epochs) ** 0.9``, epochs past the horizon at its last epoch's value).
        steps: multistep milestones, in epochs.
        factor: multistep decay per milestone.
        max_epochs: the cosine period / poly horizon ``T`` (the run's length in epochs).
    """
    if scheduler in ("none", "plateau"):
        return 1.0
    if scheduler == "multistep":
        return factor ** sum(1 for step in steps if epoch >= step)
    if scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, max_epochs) / max_epochs))
    if scheduler == "poly":
        return (1.0 - min(epoch, max_epochs - 1) / max_epochs) ** POLY_EXPONENT
    raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")


class LRSchedule:
    """The LR of every epoch, including the plateau schedule's reductions.

    Call ``lr(epoch)`` before an epoch's steps and ``observe(val_loss)`` after each validation.
    """

    def __init__(self, base_lr: float, *, scheduler: str = "none", steps: Sequence[int] = (), factor: float = 0.3,
                 max_epochs: int = 10000, warmup: int = 0, lr_patience: int = 70) -> None:
        decay_factor(0, scheduler=scheduler, steps=steps, factor=factor, max_epochs=max_epochs)  # validates
        self.base_lr = base_lr
        self.scheduler = scheduler
        self.steps = tuple(steps)
        self.factor = factor
        self.max_epochs = max_epochs
        self.warmup = warmup
        self.lr_patience = lr_patience
        self.plateau_scale = 1.0  # product of plateau reductions so far
        self.best_loss = math.inf
        self.bad_epochs = 0

    @classmethod
    def from_config(cls, cfg) -> "LRSchedule":
        """Build from a ``TrainConfig`` (learning_rate, scheduler, lr_milestones, factor, max_epochs, lr_warmup,
        lr_patience)."""
        return cls(cfg.learning_rate, scheduler=cfg.scheduler, steps=cfg.lr_milestones, factor=cfg.factor,
                   max_epochs=cfg.max_epochs, warmup=cfg.lr_warmup, lr_patience=cfg.lr_patience)

    def lr(self, epoch: int, *, horizon: int | None = None) -> float:
        """Learning rate for ``epoch`` (0-based); ``horizon``: the run's length in epochs when a time budget sets it
        (``time_horizon``), else ``max_epochs``."""
        decay = decay_factor(epoch, scheduler=self.scheduler, steps=self.steps, factor=self.factor,
                             max_epochs=min(horizon or self.max_epochs, self.max_epochs))
        return self.base_lr * warmup_factor(epoch, self.warmup) * decay * self.plateau_scale

    def observe(self, val_loss: float) -> None:
        """Feed one validation loss; the plateau schedule multiplies the LR by ``factor`` after more than
        ``lr_patience`` validations in a row without a relative improvement of 1e-4 (torch's rule)."""
        if self.scheduler != "plateau":
            return
        if val_loss < self.best_loss * (1 - PLATEAU_THRESHOLD):
            self.best_loss, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.lr_patience:
            self.plateau_scale *= self.factor
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        """The mutable (plateau) state, primitives only (checkpoint-safe)."""
        return {"plateau_scale": self.plateau_scale, "best_loss": self.best_loss, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
        self.plateau_scale = float(state["plateau_scale"])
        self.best_loss = float(state["best_loss"])
        self.bad_epochs = int(state["bad_epochs"])


def time_horizon(epoch: int, *, remaining: float, epoch_seconds: Sequence[float], max_epochs: int) -> int:
    """The run's length in epochs under a time budget, as known at the start of ``epoch``: the epochs done, plus as
    many epochs of the mean measured length as the ``remaining`` seconds hold (at least this one), at most
    ``max_epochs``. With nothing measured yet, ``max_epochs`` (epoch 0's rate is the full rate either way)."""
    if not epoch_seconds:
        return max_epochs
    mean = sum(epoch_seconds) / len(epoch_seconds)
    return min(max_epochs, epoch + max(1, math.floor(remaining / mean)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr
