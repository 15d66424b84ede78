"""`nnunet-ray train`'s options: one fold, one dim, on Ray Train workers. Defaults are the reference's.

``TrainConfig`` is made of option groups, each declared once with its own checks (resources, optimiser, schedule,
batches, model, and the sliding window it validates with); the CLI, ``config.json``, the resume tables and the sweep
space see the flat fields, so ``--learning-rate`` stays one flag and one key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable

from nnunet_ray.config.base import ConfigError, _check, _check_fields, opt, parse_duration
from nnunet_ray.config.recipes import RECIPE_NAMES
from nnunet_ray.config.window import SlidingWindow


@dataclass(frozen=True)
class RunOptions:
    """Run: its data, results root, fold, dim and name."""

    data: str = opt("", "preprocessed folder (RESULTS/<dataset>/<dim>d) holding plans.json and splits.json")
    results: str = opt("", "results root on a filesystem every node can write (local disk for one node, NFS/"
                       "a mounted bucket for several); Ray's storage_path")
    fold: int = opt(0, "cross-validation fold used for validation")
    dim: int = opt(3, "U-Net dimensionality", choices=(2, 3))
    experiment: str = opt("", "run name; default <dataset>_<dim>d_fold<F> (the same name resumes)")


@dataclass(frozen=True)
class ResourceOptions:
    """Resources: how a run holds its devices (workers, GPUs, CPUs, DALI threads, precision, the cluster)."""

    gpus: float = opt(0.0, "GPU workers (one GPU each); 0 trains on CPU workers; a fraction below 1 is one worker "
                      "sharing a GPU (e.g. 0.5: two such runs per GPU)")
    workers: int = opt(1, "CPU workers when --gpus is 0")
    cpus_per_worker: int = opt(1, "CPUs reserved per worker (DALI threads use them)")
    placement: str = opt("pack", "where a multi-GPU run's workers go: pack (all on one node, STRICT_PACK: DDP over "
                         "NVLink/PCIe, never split across spot nodes) or spread (across nodes)",
                         choices=("pack", "spread"))
    dali_threads: int = opt(2, "DALI CPU threads per pipeline", aliases=("--num-workers", "--num_workers"))
    amp: bool = opt(False, "mixed precision: fp16 autocast + GradScaler on CUDA, bf16 autocast on CPU")
    amp_dtype: str = opt("float16", "autocast dtype on CUDA", choices=("float16", "bfloat16"))
    address: str = opt("", "Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def check_resources(self) -> None:
        check_gpus(self.gpus, "gpus", workers=1)
        for name in ("workers", "cpus_per_worker", "dali_threads"):
            _check(getattr(self, name) >= 1, name, "must be >= 1")

    @property
    def world_size(self) -> int:
        """Number of workers (DDP ranks): one per whole GPU (a fraction of one GPU: one), else ``--workers``."""
        return max(1, int(self.gpus)) if self.gpus > 0 else self.workers

    @property
    def gpus_per_worker(self) -> float:
        """GPUs each worker holds: 1, or the fraction of one GPU a single worker shares (``--gpus 0.5``)."""
        return min(1.0, self.gpus)


@dataclass(frozen=True)
class OptimizerOptions:
    """Optimiser: the method's named defaults (--recipe), the optimizer and its settings."""

    recipe: str = opt("dle", "named defaults of the options below that make up a training method: dle (NVIDIA's "
                      "nnU-Net, these defaults) or nnunetv2 (nnU-Net v2's nnUNetTrainer: SGD lr 1e-2 Nesterov, poly, "
                      "250 batches per epoch, 1000 epochs, deep supervision); a flag given wins over its recipe",
                      choices=RECIPE_NAMES)
    optimizer: str = opt("radam", "optimizer", choices=("radam", "adam", "sgd"))
    learning_rate: float = opt(1e-3, "initial learning rate")
    weight_decay: float = opt(1e-4, "weight decay: decoupled in Adam/RAdam, L2 in SGD (recipe dle: none with SGD, "
                          "as the reference)")
    momentum: float = opt(0.99, "SGD momentum")
    nesterov: bool = opt(False, "SGD: Nesterov momentum")
    gradient_clip_val: float = opt(0.0, "gradient-norm clipping (0 = off)")

    def check_optimizer(self) -> None:
        _check(self.learning_rate > 0, "learning_rate", "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        _check(not (self.nesterov and self.optimizer == "sgd") or self.momentum > 0, "nesterov",
               "needs --momentum > 0")
        _check(self.gradient_clip_val >= 0, "gradient_clip_val", "must be >= 0")


@dataclass(frozen=True)
class ScheduleOptions:
    """Schedule: the LR schedule, epochs and their length, validation, stopping."""

    scheduler: str = opt("none", "LR schedule, stepped per epoch; cosine and poly decay over --max-epochs, or with "
                         "--max-time over the epochs the budget holds (re-estimated each epoch)",
                         choices=("none", "multistep", "cosine", "poly", "plateau"))
    lr_milestones: tuple[int, ...] = opt((), "multistep schedule: epochs at which the rate is multiplied by --factor",
                                         aliases=("--steps",))
    factor: float = opt(0.3, "multistep / plateau decay factor")
    lr_patience: int = opt(70, "plateau scheduler patience (epochs)")
    lr_warmup: int = opt(0, "linear learning-rate warm-up epochs (0 = the reference's constant start)")
    warmup: int = opt(5, "benchmark mode: untimed warm-up steps before timing (as the reference's --warmup)")
    min_epochs: int = opt(30, "never stop before this many epochs")
    max_epochs: int = opt(10000, "stop after this many epochs")
    patience: int = opt(100, "early stopping: validations without a better validation mean Dice (with "
                        "--val-every 1, epochs)")
    skip_first_n_eval: int = opt(0, "skip validation for the first N epochs")
    val_every: int = opt(1, "validate every N epochs, and always at the last one")
    checkpoint_every: int = opt(1, "write a checkpoint every N epochs; also whenever validation improves (the best "
                                "is never lost) and at the last epoch")
    max_time: str = opt("", "stop after this wall time, HH:MM:SS (as Lightning's max_time): the epoch running "
                        "then is validated and checkpointed, the best checkpoint is kept, stop_reason says why")
    train_batches: int = opt(0, "training steps per epoch, i.e. the epoch length (as nnU-Net v2's 250 "
                             "iterations); the patch stream is endless, so it may exceed one pass "
                             "(0 = one pass over this rank's share of the fold's cases)")
    val_cases: int = opt(0, "limit validation cases per epoch (0 = all)",
                         aliases=("--test-batches", "--test_batches"))

    def check_schedule(self) -> None:
        for name in ("skip_first_n_eval", "train_batches", "val_cases", "warmup", "lr_warmup", "lr_patience",
                     "min_epochs"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("patience", "max_epochs", "val_every", "checkpoint_every"):
            _check(getattr(self, name) >= 1, name, "must be >= 1")
        _check(self.min_epochs <= self.max_epochs, "min_epochs", "must be <= --max-epochs")
        _check(0 < self.factor <= 1, "factor", "must be in (0, 1]")
        _check(self.scheduler != "multistep" or bool(self.lr_milestones), "lr_milestones",
               "is required with --scheduler multistep")
        if self.max_time:
            parse_duration(self.max_time, "max_time")

    @property
    def max_seconds(self) -> float | None:
        """``--max-time`` in seconds, or None without a limit."""
        return parse_duration(self.max_time, "max_time") if self.max_time else None


@dataclass(frozen=True)
class BatchOptions:
    """Batches: what a training step sees (batches, patches, foreground oversampling); where validation scores go."""

    batch_size: int = opt(2, "per-worker batch size (2D: slices)")
    nvol: int = opt(1, "2D: volumes per batch")
    oversampling: float = opt(0.33, "probability that a crop is centred on foreground")
    patch_size: tuple[int, ...] = opt((), "training patch (Z Y X, or Y X in 2D); kernels, strides and filters are "
                                      "re-derived for it with the planner's rule (empty = the plans' patch)")
    val_scores_on: str = opt("auto", "where validation accumulates a case's whole-volume class scores: auto (the "
                             "CPU when they exceed 1 GiB on a GPU), cpu, or device", choices=("auto", "cpu", "device"))

    def check_batches(self, dim: int) -> None:
        for name in ("batch_size", "nvol"):
            _check(getattr(self, name) >= 1, name, "must be >= 1")
        _check(0 <= self.oversampling <= 1, "oversampling", "must be in [0, 1]")
        _check(dim == 3 or self.batch_size % self.nvol == 0, "nvol", "must divide --batch-size (2D)")
        _check(not self.patch_size or len(self.patch_size) == dim, "patch_size",
               f"needs {dim} edges for --dim {dim}, got {list(self.patch_size)}")
        _check(all(p >= 1 for p in self.patch_size), "patch_size", "edges must be >= 1")


@dataclass(frozen=True)
class ModelOptions:
    """Model: the network and its loss."""

    norm: str = opt("instance", "normalization layer", choices=("instance", "batch", "group"))
    residual: bool = opt(False, "residual encoder blocks")
    deep_supervision: bool = opt(False, "auxiliary heads on coarser decoder levels (see --deep-supervision-scheme)")
    deep_supervision_scheme: str = opt("dle", "with --deep-supervision: dle (heads at the two next coarser levels, "
                                       "loss weights 1/2^i, the reference's) or nnunetv2 (every decoder level but the "
                                       "lowest-resolution one, whose weight nnU-Net v2 sets to 0; 1/2^i normalised)",
                                       choices=("dle", "nnunetv2"))
    focal: bool = opt(False, "focal loss instead of cross-entropy in Dice + CE")
    negative_slope: float = opt(0.01, "LeakyReLU negative slope (also Kaiming init's a)")
    sync_batchnorm: bool = opt(False, "synchronise BatchNorm statistics across GPU workers (with --norm batch; "
                               "torch has no CPU SyncBatchNorm)")

    def check_model(self) -> None:
        _check(not self.sync_batchnorm or self.norm == "batch", "sync_batchnorm", "needs --norm batch")


@dataclass(frozen=True)
class TrainConfig(SlidingWindow, ModelOptions, BatchOptions, ScheduleOptions, OptimizerOptions, ResourceOptions,
                  RunOptions):
    """`nnunet-ray train`: one fold, one dim, on Ray Train workers. Defaults are the reference's."""

    benchmark: bool = opt(False, "benchmark mode: time --train-batches steps after --warmup, write perf.json")
    seed: int = opt(1, "random seed (model init, DALI readers and augmentations)")
    resume_training: bool = opt(False, "continue the run of the same name from its last checkpoint")
    max_failures: int = opt(10, "worker-group restarts after a failure (a lost node, a crash), each from the last "
                            "checkpoint; spot nodes vanish without notice, so the default allows many (-1 = no limit)")
    max_preemption_failures: int = opt(-1, "restarts after a node drained with notice (preemption), counted apart "
                                       "from --max-failures (-1 = no limit)")
    checkpoint_upload: str = opt("async", "checkpoint upload to --results: async (in the background, training goes "
                                 "on) or sync (each epoch waits for it)", choices=("async", "sync"))
    image_every: int = opt(10, "TensorBoard: log a validation slice overlay every K epochs (0 = never)")
    explicit: tuple[str, ...] = opt((), "the options set by the user (flags, --config values, swept values); "
                                    "--recipe gave the others. Filled by the CLI, recorded in config.json", flag=False)

    def validate(self) -> "TrainConfig":
        _check(bool(self.data), "data", "is required")
        _check(bool(self.results), "results", "is required")
        _check_fields(self)
        for name in ("max_failures", "max_preemption_failures"):
            _check(getattr(self, name) >= -1, name, "must be >= 0, or -1 for no limit")
        for name in ("fold", "seed", "image_every"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        self.check_resources()
        self.check_optimizer()
        self.check_schedule()
        self.check_batches(self.dim)
        self.check_model()
        self.check_window()
        return self


def check_gpus(gpus: float, name: str, *, workers: int) -> None:
    """``gpus`` GPUs per run: >= 0; several GPUs only whole (one per DDP worker); a fraction below 1 only for one
    worker (Ray shares a GPU between single-process trials, not between the ranks of one DDP run).

    Raises:
        ConfigError: naming ``name``'s flag.
    """
    _check(gpus >= 0, name, "must be >= 0")
    _check(gpus <= 1 or float(gpus).is_integer(), name,
           f"{gpus:g}: several GPUs must be whole (one per DDP worker); a fraction below 1 shares one GPU")
    _check(not (0 < gpus < 1) or workers == 1, name,
           f"{gpus:g}: a shared GPU fraction runs one worker; it cannot go with several workers per run")


def coerce_option(name: str, value: Any, where: str) -> Any:
    """``value`` as the type of ``TrainConfig.<name>``, from a file or a flag (``"64,96,80"`` or a list for a patch
    size; a bool only as a JSON bool, since ``"false"`` would be true).

    Raises:
        ConfigError: naming ``where`` (the flag or file), the option and the value.
    """
    kind = str({f.name: f.type for f in fields(TrainConfig)}[name])  # a string: postponed annotations
    try:
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(int(v) for v in items)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind in ("int", "float") and not isinstance(value, bool) and not math.isfinite(float(value)):
            raise ConfigError(f"{where}: {name}: {value!r} is not finite")  # and int(inf) raises OverflowError
        if kind == "int" and (isinstance(value, bool) or float(value) != int(float(value))):
            raise ValueError
        if kind == "float" and isinstance(value, bool):
            raise ValueError
        converters: dict[str, Callable[[Any], Any]] = {"int": lambda v: int(float(v)), "float": float, "str": str}
        return converters[kind](value)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name}: {value!r} is not a valid {kind}") from None
