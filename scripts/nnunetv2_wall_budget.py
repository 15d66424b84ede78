"""nnU-Net v2 trainer with a wall-clock budget: ``nnUNetTrainer_WallBudget``, for scripts/bench_anatomy.py.

Not imported by nnunet_ray: ``anatomy_nnunetv2.py --setup`` (run by bench_anatomy.py when needed) copies this file
into the nnU-Net v2 virtual environment as ``nnunetv2/training/nnUNetTrainer/nnUNetTrainer_WallBudget.py``, where
``nnUNetv2_train -tr`` finds trainers by class name (anatomy_nnunetv2.py says why not in ``variants/``), then

    NNUNET_WALL_BUDGET_S=1680 nnUNetv2_train 981 3d_fullres 0 -tr nnUNetTrainer_WallBudget -device cpu

trains until the budget is spent. Everything else is nnU-Net v2's ``nnUNetTrainer`` as it is (SGD lr 1e-2, poly,
250 iterations and 50 validation iterations per epoch, deep supervision, its augmentation), except:

- ``num_epochs`` is re-estimated at the start of every epoch as the epochs done plus as many epochs of the mean
  measured length as the remaining budget holds (at least this one), and the poly schedule's horizon with it, so
  the learning rate decays to its end over the epochs that fit: the rule of nnunet_ray's ``--max-time``
  (``training/schedules.py::time_horizon``). The clock starts when training starts (``on_train_start``: network,
  data loaders, unpacking), as nnunet_ray's starts at its ``fit``; training ends after the epoch during which the
  budget ran out, as nnunet_ray's does.
- ``NNUNET_WALL_ITERATIONS`` (smoke runs only) shortens the epoch to that many iterations, and validation to a fifth
  of it (v2's 250:50), because one 250-iteration epoch of a 3D network on a 2-core CPU takes many minutes.
- the final sliding-window validation of the fold's validation cases (``perform_actual_validation``) is skipped
  unless ``NNUNET_WALL_FINAL_VAL=1``: the benchmark scores the test cases, and that validation would run past the
  budget.

The trainer writes ``wall_budget.json`` (epochs, training seconds, each epoch's horizon) into its output folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from os.path import join

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # type: ignore[import-not-found]

CUDA = torch.device("cuda")  # the parent's default device; -device cpu replaces it


class nnUNetTrainer_WallBudget(nnUNetTrainer):  # nnU-Net's -tr finds trainers by this class name
    # The parent's exact signature: it records its arguments by name (locals()) for checkpoints.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ["NNUNET_WALL_BUDGET_S"])
        iterations = os.environ.get("NNUNET_WALL_ITERATIONS")
        if iterations:
            self.num_iterations_per_epoch = int(iterations)
            self.num_val_iterations_per_epoch = max(1, int(iterations) // 5)
        self.deadline = math.inf
        self.max_num_epochs = self.num_epochs  # v2's own cap (1000); num_epochs becomes the budget's horizon
        self.train_start = 0.0
        self.epoch_seconds: list[float] = []
        self.horizons: list[int] = []

    def on_train_start(self):
        self.train_start = time.perf_counter()
        self.deadline = self.train_start + self.budget_s
        super().on_train_start()

    def on_train_epoch_start(self):
        # Before the parent steps the poly schedule with this epoch: its horizon is what the budget holds now.
        epoch = self.current_epoch
        if self.epoch_seconds:
            mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
            remaining = self.deadline - time.perf_counter()
            self.num_epochs = epoch + max(1, math.floor(remaining / mean))
        self.lr_scheduler.max_steps = self.num_epochs
        self.horizons.append(self.num_epochs)
        self._epoch_start = time.perf_counter()
        super().on_train_epoch_start()

    def on_epoch_end(self):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        super().on_epoch_end()

    def run_training(self):
        """nnUNetTrainer.run_training, with a loop that starts an epoch while the budget lasts (the horizon is
        re-estimated inside it, for the schedule) and finishes the epoch during which it runs out, as nnunet_ray's
        ``--max-time`` does."""
        self.on_train_start()
        while self.current_epoch < self.max_num_epochs and time.perf_counter() < self.deadline:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train))
                             for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.num_epochs = self.current_epoch  # the run's real length, as the checkpoint records it
        self.on_train_end()
        record = {"epochs": self.current_epoch, "train_seconds": time.perf_counter() - self.train_start,
                  "budget_s": self.budget_s, "iterations_per_epoch": self.num_iterations_per_epoch,
                  "epoch_seconds": self.epoch_seconds, "horizons": self.horizons}
        with open(join(self.output_folder, "wall_budget.json"), "w") as f:
            json.dump(record, f, indent=2)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("NNUNET_WALL_FINAL_VAL") == "1":
            super().perform_actual_validation(save_probabilities)
