"""Typed, frozen configs for every command: the one object that flows from the CLI to the Ray workers.

Each field's ``metadata["help"]`` is its CLI help; the CLI builds its flags from these dataclasses
(kebab-case: ``learning_rate`` -> ``--learning-rate``). ``validate()`` raises ``ConfigError`` naming the
flag to fix. At the Ray boundary a config travels as ``asdict(cfg)`` and is rebuilt with ``from_dict``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A user-facing option is invalid; the message names the flag to fix."""


class RunError(RuntimeError):
    """A distributed run failed for good (retries used up); the message names the cause and the run folder."""


def opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with CLI help text and optional metadata: ``choices``, ``cli`` (the flag, when not the
    field's kebab-case name) and ``aliases`` (more accepted spellings, e.g. the reference's)."""
    return field(default=default, metadata={"help": help, **extra})


def flag_name(name: str) -> str:
    """``learning_rate`` -> ``--learning-rate``: how a field is spelled on the command line."""
    return "--" + name.replace("_", "-")


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Rebuild a config from ``asdict`` output, ignoring unknown keys (older/newer checkpoints)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    return cls(**kwargs)


def parse_duration(text: str, name: str) -> float:
    """``HH:MM:SS`` (hours may exceed 23) -> seconds; a ConfigError names the flag otherwise."""
    parts = text.split(":")
    valid = len(parts) == 3 and all(p.isdigit() for p in parts) and int(parts[1]) < 60 and int(parts[2]) < 60
    _check(valid, name, f"{text!r} is not HH:MM:SS")
    hours, minutes, seconds = (int(p) for p in parts)
    _check(hours * 3600 + minutes * 60 + seconds > 0, name, "must be longer than 00:00:00")
    return float(hours * 3600 + minutes * 60 + seconds)


def _check(condition: bool, name: str, problem: str) -> None:
    if not condition:
        raise ConfigError(f"{flag_name(name)}: {problem}")


def _check_choices(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices is not None and value not in choices:
            raise ConfigError(f"{flag_name(f.name)}: {value!r} is not one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class SynthConfig:
    """`nnunet-ray synth`: write a deterministic synthetic MSD-format task."""

    out: str = opt("", "folder to create the task in (its name becomes the dataset name)")
    cases: int = opt(10, "number of training cases")
    test: int = opt(2, "number of test cases (imagesTs; their ground truth goes to labelsTs)")
    modalities: int = opt(1, "image channels; >1 writes 4D NIfTI like MSD BraTS")
    ct: bool = opt(False, "CT-like intensities (Hounsfield units, modality 'CT')")
    size: int = opt(64, "approximate edge length of a volume in voxels")
    seed: int = opt(0, "random seed; the same seed writes the same files")

    def validate(self) -> "SynthConfig":
        _check(bool(self.out), "out", "is required")
        _check(self.cases >= 2, "cases", "must be at least 2")
        _check(self.test >= 0, "test", "must be >= 0")
        _check(self.modalities >= 1, "modalities", "must be >= 1")
        _check(self.size >= 16, "size", "must be >= 16")
        return self


MSD_MIRROR = "https://msd-for-monai.s3-us-west-2.amazonaws.com"  # the MSD tasks' public mirror (as MONAI's)


@dataclass(frozen=True)
class DownloadConfig:
    """`nnunet-ray download`: fetch Medical Segmentation Decathlon tasks, verify them and extract them."""

    task: tuple[int, ...] = opt((), "MSD task numbers, e.g. --task 01 04 (1-10)")
    out: str = opt("", "folder to extract into; each task becomes OUT/TaskNN_Name/ (the dataset layout)")
    mirror: str = opt(MSD_MIRROR, "base URL of the mirror holding TaskNN_Name.tar")
    keep_archive: bool = opt(False, "keep the verified .tar after extracting it")

    def validate(self) -> "DownloadConfig":
        _check(bool(self.task), "task", "is required")
        _check(all(1 <= t <= 10 for t in self.task), "task", "MSD tasks are 1-10")
        _check(bool(self.out), "out", "is required")
        _check(self.mirror.startswith(("http://", "https://")), "mirror", "must be an http(s) URL")
        return self


@dataclass(frozen=True)
class PlanConfig:
    """`nnunet-ray plan`: fingerprint a raw dataset and write plans.json."""

    data: str = opt("", "raw dataset folder holding dataset.json")
    results: str = opt("", "preprocessed root; plans go to RESULTS/<dataset>/<dim>d/ (default: print only)")
    dim: int = opt(3, "U-Net dimensionality", choices=(2, 3))
    min_fmap: int = opt(4, "smallest feature-map edge at the bottleneck")
    max_depth: int = opt(6, "maximum number of downsamplings")
    memory_budget_mvox: float = opt(
        0.0, "patch-size budget in megavoxels for automatic planning (0 = the default per dim)")
    address: str = opt("", "Ray cluster to join ('auto' for a running one); empty starts a local cluster")
    print_plans: bool = opt(False, "write the plans JSON to stdout", cli="--print")

    def validate(self) -> "PlanConfig":
        _check(bool(self.data), "data", "is required")
        _check_choices(self)
        _check(self.min_fmap >= 1, "min_fmap", "must be >= 1")
        _check(1 <= self.max_depth <= 8, "max_depth", "must be in 1..8")
        _check(self.memory_budget_mvox >= 0, "memory_budget_mvox", "must be >= 0")
        return self


@dataclass(frozen=True)
class PreprocessConfig:
    """`nnunet-ray preprocess`: plan (if needed) and write preprocessed arrays with Ray Data."""

    data: str = opt("", "raw dataset folder holding dataset.json")
    results: str = opt("", "preprocessed root; arrays go to RESULTS/<dataset>/<dim>d/")
    dim: int = opt(3, "U-Net dimensionality", choices=(2, 3))
    exec_mode: str = opt("training", "which cases: training (with labels), val (labels kept, no padding), "
                         "test (imagesTs)", choices=("training", "val", "test"))
    case_workers: int = opt(0, "parallel case workers (0 = one per available CPU)",
                            aliases=("--num-workers", "--num_workers"))
    nfolds: int = opt(5, "cross-validation folds written to splits.json (KFold, shuffled with seed 12345)")
    splits: str = opt("", "import the folds from this nnU-Net v2 splits_final.json instead of making --nfolds "
                      "(checked: every id a case, each case validated in exactly one fold)")
    min_fmap: int = opt(4, "smallest feature-map edge at the bottleneck (used when planning)")
    max_depth: int = opt(6, "maximum number of downsamplings (used when planning)")
    address: str = opt("", "Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def validate(self) -> "PreprocessConfig":
        _check(bool(self.data), "data", "is required")
        _check(bool(self.results), "results", "is required")
        _check_choices(self)
        _check(self.case_workers >= 0, "case_workers", "must be >= 0")
        _check(self.nfolds >= 2, "nfolds", "must be >= 2")
        _check(not self.splits or self.exec_mode == "training", "splits", "needs --exec-mode training")
        return self


@dataclass(frozen=True)
class TrainConfig:
    """`nnunet-ray train`: one fold, one dim, on Ray Train workers. Defaults are the reference's."""

    data: str = opt("", "preprocessed folder (RESULTS/<dataset>/<dim>d) holding plans.json and splits.json")
    results: str = opt("", "results root on a filesystem every node can write (local disk for one node, NFS/"
                       "a mounted bucket for several); Ray's storage_path")
    fold: int = opt(0, "cross-validation fold used for validation")
    dim: int = opt(3, "U-Net dimensionality", choices=(2, 3))
    experiment: str = opt("", "run name; default <dataset>_<dim>d_fold<F> (the same name resumes)")
    # --- workers and devices
    gpus: int = opt(0, "GPU workers (one GPU each); 0 trains on CPU workers")
    workers: int = opt(1, "CPU workers when --gpus is 0")
    cpus_per_worker: int = opt(1, "CPUs reserved per worker (DALI threads use them)")
    dali_threads: int = opt(2, "DALI CPU threads per pipeline", aliases=("--num-workers", "--num_workers"))
    amp: bool = opt(False, "mixed precision: fp16 autocast + GradScaler on CUDA, bf16 autocast on CPU")
    amp_dtype: str = opt("float16", "autocast dtype on CUDA", choices=("float16", "bfloat16"))
    benchmark: bool = opt(False, "benchmark mode: time --train-batches steps after --warmup, write perf.json")
    # --- optimisation
    optimizer: str = opt("radam", "optimizer", choices=("radam", "adam", "sgd"))
    learning_rate: float = opt(1e-3, "initial learning rate")
    weight_decay: float = opt(1e-4, "weight decay (Adam/RAdam)")
    momentum: float = opt(0.99, "SGD momentum")
    scheduler: str = opt("none", "LR schedule", choices=("none", "multistep", "cosine", "plateau"))
    lr_milestones: tuple[int, ...] = opt((), "multistep schedule: epochs at which the rate is multiplied by --factor",
                                         aliases=("--steps",))
    factor: float = opt(0.3, "multistep / plateau decay factor")
    lr_patience: int = opt(70, "plateau scheduler patience (epochs)")
    warmup: int = opt(5, "benchmark mode: untimed warm-up steps before timing (as the reference's --warmup)")
    lr_warmup: int = opt(0, "linear learning-rate warm-up epochs (0 = the reference's constant start)")
    gradient_clip_val: float = opt(0.0, "gradient-norm clipping (0 = off)")
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
    # --- data
    batch_size: int = opt(2, "per-worker batch size (2D: slices)")
    val_batch_size: int = opt(4, "sliding-window batch size")
    nvol: int = opt(1, "2D: volumes per batch")
    oversampling: float = opt(0.33, "probability that a crop is centred on foreground")
    overlap: float = opt(0.5, "sliding-window overlap for validation")
    blend: str = opt("gaussian", "sliding-window blending", choices=("gaussian", "constant"))
    tta: bool = opt(False, "flip test-time augmentation during validation")
    patch_size: tuple[int, ...] = opt((), "training patch (Z Y X, or Y X in 2D); kernels, strides and filters are "
                                      "re-derived for it with the planner's rule (empty = the plans' patch)")
    val_scores_on: str = opt("auto", "where validation accumulates a case's whole-volume class scores: auto (the "
                             "CPU when they exceed 1 GiB on a GPU), cpu, or device", choices=("auto", "cpu", "device"))
    # --- model
    norm: str = opt("instance", "normalization layer", choices=("instance", "batch", "group"))
    residual: bool = opt(False, "residual encoder blocks")
    deep_supervision: bool = opt(False, "auxiliary heads at the two next coarser levels")
    focal: bool = opt(False, "focal loss instead of cross-entropy in Dice + CE")
    negative_slope: float = opt(0.01, "LeakyReLU negative slope (also Kaiming init's a)")
    sync_batchnorm: bool = opt(False, "synchronise BatchNorm statistics across GPU workers (with --norm batch; "
                               "torch has no CPU SyncBatchNorm)")
    seed: int = opt(1, "random seed (model init, DALI readers and augmentations)")
    # --- checkpoints, logging, failures
    resume_training: bool = opt(False, "continue the run of the same name from its last checkpoint")
    max_failures: int = opt(10, "worker-group restarts after a failure (a lost node, a crash), each from the last "
                            "checkpoint; spot nodes vanish without notice, so the default allows many (-1 = no limit)")
    max_preemption_failures: int = opt(-1, "restarts after a node drained with notice (preemption), counted apart "
                                       "from --max-failures (-1 = no limit)")
    checkpoint_upload: str = opt("async", "checkpoint upload to --results: async (in the background, training goes "
                                 "on) or sync (each epoch waits for it)", choices=("async", "sync"))
    image_every: int = opt(10, "TensorBoard: log a validation slice overlay every K epochs (0 = never)")
    address: str = opt("", "Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def validate(self) -> "TrainConfig":
        _check(bool(self.data), "data", "is required")
        _check(bool(self.results), "results", "is required")
        _check_choices(self)
        for name in ("max_failures", "max_preemption_failures"):
            _check(getattr(self, name) >= -1, name, "must be >= 0, or -1 for no limit")
        for name in ("fold", "gpus", "skip_first_n_eval", "train_batches", "val_cases", "seed",
                     "warmup", "lr_warmup", "lr_patience", "min_epochs", "image_every"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("workers", "cpus_per_worker", "dali_threads", "batch_size", "val_batch_size", "nvol",
                     "patience", "max_epochs", "val_every", "checkpoint_every"):
            _check(getattr(self, name) >= 1, name, "must be >= 1")
        _check(self.learning_rate > 0, "learning_rate", "must be > 0")
        _check(0 <= self.oversampling <= 1, "oversampling", "must be in [0, 1]")
        _check(0 <= self.overlap < 1, "overlap", "must be in [0, 1)")
        _check(self.min_epochs <= self.max_epochs, "min_epochs", "must be <= --max-epochs")
        _check(self.dim == 3 or self.batch_size % self.nvol == 0, "nvol", "must divide --batch-size (2D)")
        _check(0 < self.factor <= 1, "factor", "must be in (0, 1]")
        _check(self.gradient_clip_val >= 0, "gradient_clip_val", "must be >= 0")
        _check(not self.sync_batchnorm or self.norm == "batch", "sync_batchnorm", "needs --norm batch")
        _check(self.scheduler != "multistep" or bool(self.lr_milestones), "lr_milestones",
               "is required with --scheduler multistep")
        _check(not self.patch_size or len(self.patch_size) == self.dim, "patch_size",
               f"needs {self.dim} edges for --dim {self.dim}, got {list(self.patch_size)}")
        _check(all(p >= 1 for p in self.patch_size), "patch_size", "edges must be >= 1")
        if self.max_time:
            parse_duration(self.max_time, "max_time")
        return self

    @property
    def max_seconds(self) -> float | None:
        """``--max-time`` in seconds, or None without a limit."""
        return parse_duration(self.max_time, "max_time") if self.max_time else None

    @property
    def world_size(self) -> int:
        """Number of Ray Train workers (DDP ranks)."""
        return self.gpus if self.gpus > 0 else self.workers


# TrainConfig fields that `cv` and `tune` set per trial themselves, so they are not flags of those commands.
TRIAL_FIELDS = ("data", "results", "fold", "experiment", "resume_training", "gpus", "workers", "benchmark")


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """``"0-4"`` / ``"0,2,3"`` / ``"3"`` -> sorted unique ints; raises ``ConfigError`` naming ``name``'s flag."""
    values: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",")):
            low, _, high = part.partition("-")
            values.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(f"{flag_name(name)}: {text!r} is not a list like 0-4 or 0,2,3") from None
    _check(bool(values), name, f"{text!r} selects nothing")
    return tuple(sorted(values))


def _check_experiment(cfg: Any) -> None:
    _check(bool(cfg.data), "data", "is required")
    _check(bool(cfg.results), "results", "is required")
    _check("/" not in cfg.name and not cfg.name.startswith("."), "name", f"{cfg.name!r} must be a plain folder name")
    _check(cfg.gpus_per_trial >= 0, "gpus_per_trial", "must be >= 0")
    _check(cfg.workers_per_trial >= 1, "workers_per_trial", "must be >= 1")
    parse_int_list(cfg.folds, "folds")


@dataclass(frozen=True)
class CVConfig:
    """`nnunet-ray cv`: every (fold, dim) one Ray Tune trial, as many at once as the cluster holds."""

    data: str = opt("", "raw dataset folder (dataset.json: planned and preprocessed first) or a preprocessed "
                    "folder PRE/<dataset>/<dim>d")
    results: str = opt("", "results root (Ray's storage_path); the experiment goes to RESULTS/NAME/")
    dims: str = opt("3", "dims to cross-validate: 3, 2 or 2,3")
    folds: str = opt("0-4", "folds to train: 0-4, 0,2 or 3")
    gpus_per_trial: int = opt(0, "GPU workers per trial (DDP, one GPU each); 0 trains on CPU workers")
    workers_per_trial: int = opt(1, "CPU workers per trial when --gpus-per-trial is 0")
    name: str = opt("", "experiment name, a folder under RESULTS (default <dataset>_cv); an existing one is only "
                    "continued with --resume")
    config: str = opt("", "JSON file of training options (e.g. tune's best_config.json); its values replace "
                      "options left at their defaults")
    resume: bool = opt(False, "continue experiment NAME (Tuner.restore): finished trials are kept, interrupted "
                       "ones continue from their last checkpoint")
    preprocessed: str = opt("", "where a raw dataset is preprocessed to (default RESULTS/preprocessed)")
    train: TrainConfig = opt(TrainConfig(), "training options of every trial", nested=TRIAL_FIELDS + ("dim",))

    def validate(self) -> "CVConfig":
        _check_experiment(self)
        _check(set(parse_int_list(self.dims, "dims")) <= {2, 3}, "dims", f"{self.dims!r}: dims are 2 and/or 3")
        return self


@dataclass(frozen=True)
class TuneConfig:
    """`nnunet-ray tune`: a learning-rate x patch-size (or any training option) sweep on Ray Tune with ASHA."""

    data: str = opt("", "raw dataset folder (dataset.json: planned and preprocessed first) or a preprocessed "
                    "folder PRE/<dataset>/<dim>d")
    results: str = opt("", "results root (Ray's storage_path); the experiment goes to RESULTS/NAME/")
    folds: str = opt("0", "folds every configuration trains on; its score is the mean over them")
    learning_rate: str = opt("", "learning-rate space: loguniform:1e-4:1e-2, uniform:A:B, choice:1e-3,3e-3, "
                             "grid:1e-3,3e-3 or one value (empty = --search-space / the default)")
    patch_size: tuple[str, ...] = opt((), "patch sizes to choose from, e.g. 64,96,80 80,112,96 (empty = the plans')")
    search_space: str = opt("", "YAML file: training option -> {choice|grid|uniform|loguniform: values}")
    num_samples: int = opt(4, "configurations drawn from the space (grid values: each one num-samples times)")
    scheduler: str = opt("asha", "trial scheduler: asha stops poor trials at epoch milestones", choices=("asha", "none"))
    grace_period: int = opt(1, "ASHA: epochs every trial trains before it can be stopped")
    reduction_factor: int = opt(2, "ASHA: keep the best 1/N of trials at each milestone")
    search_seed: int = opt(0, "seed of the random search (the same seed draws the same configurations)")
    gpus_per_trial: int = opt(0, "GPU workers per trial (DDP, one GPU each); 0 trains on CPU workers")
    workers_per_trial: int = opt(1, "CPU workers per trial when --gpus-per-trial is 0")
    name: str = opt("", "experiment name, a folder under RESULTS (default <dataset>_tune); an existing one is "
                    "only continued with --resume")
    resume: bool = opt(False, "continue experiment NAME (Tuner.restore): finished trials are kept, interrupted "
                       "ones continue from their last checkpoint")
    preprocessed: str = opt("", "where a raw dataset is preprocessed to (default RESULTS/preprocessed)")
    train: TrainConfig = opt(TrainConfig(), "training options of every trial (the swept ones vary)",
                             nested=TRIAL_FIELDS)

    def validate(self) -> "TuneConfig":
        _check_experiment(self)
        _check_choices(self)
        _check(self.num_samples >= 1, "num_samples", "must be >= 1")
        _check(self.grace_period >= 1, "grace_period", "must be >= 1")
        _check(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        _check(self.search_seed >= 0, "search_seed", "must be >= 0")
        return self


@dataclass(frozen=True)
class PredictConfig:
    """`nnunet-ray predict`: ensemble prediction of raw images on a Ray actor pool, written in the input geometry."""

    models: tuple[str, ...] = opt((), "checkpoint folders, or experiment / run folders (each training run's best "
                                  "checkpoint under them joins the ensemble: every fold, and every dim present)")
    input: str = opt("", "images to predict: a dataset folder (its test cases) or a folder of NIfTI files")
    out: str = opt("", "prediction folder: <case>.nii.gz label maps, predict.json (a rerun skips finished cases)")
    tta: bool = opt(False, "flip test-time augmentation (8 passes in 3D, 4 in 2D)")
    amp: bool = opt(False, "mixed precision: fp16 autocast on CUDA, bf16 on CPU")
    actors: int = opt(0, "predicting actors, each holding every member (0 = one per GPU, else one per "
                      "--cpus-per-actor CPUs)")
    gpus_per_actor: float = opt(1.0, "GPUs per actor where the cluster has GPUs (fractions share a GPU)")
    cpus_per_actor: int = opt(1, "CPUs per actor (its torch threads)")
    overlap: float = opt(0.5, "sliding-window overlap")
    blend: str = opt("gaussian", "sliding-window blending", choices=("gaussian", "constant"))
    val_batch_size: int = opt(4, "sliding-window batch size (windows per forward pass)")
    sw_device: str = opt("model", "where whole-volume accumulators live: 'model' (the model's device) or 'cpu' "
                         "(host memory while windows run on the GPU: large CT volumes)", choices=("model", "cpu"))
    save_probabilities: bool = opt(False, "also write <case>.npz: float16 class probabilities on the original grid")
    postprocess: bool = opt(False, "apply the post-processing cross-validation chose (best_configuration.json of "
                            "the --models experiment: keep the largest connected component of some classes)")
    address: str = opt("", "Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def validate(self) -> "PredictConfig":
        _check(bool(self.models), "models", "is required (checkpoint or experiment folders)")
        _check(bool(self.input), "input", "is required")
        _check(bool(self.out), "out", "is required")
        _check_choices(self)
        _check(self.actors >= 0, "actors", "must be >= 0")
        _check(self.gpus_per_actor > 0, "gpus_per_actor", "must be > 0")
        _check(self.cpus_per_actor >= 1, "cpus_per_actor", "must be >= 1")
        _check(0 <= self.overlap < 1, "overlap", "must be in [0, 1)")
        _check(self.val_batch_size >= 1, "val_batch_size", "must be >= 1")
        return self


@dataclass(frozen=True)
class EvaluateConfig:
    """`nnunet-ray evaluate`: Dice, HD95 and normalised surface Dice of predictions against reference labels."""

    preds: str = opt("", "folder of predicted label maps (<case>.nii.gz)")
    labels: str = opt("", "folder of reference label maps with the same file names")
    nsd_tolerance: float = opt(1.0, "normalised surface Dice tolerance in mm")
    out: str = opt("", "where summary.json and summary.csv go (default: the --preds folder)")
    # --- cross-validation in the original space (instead of --preds / --labels)
    cv: str = opt("", "experiment folder: predict every fold's validation cases with its best checkpoint and score "
                  "them against the raw labels (needs --data)")
    data: str = opt("", "with --cv: the raw dataset folder the experiment was trained on")
    tta: bool = opt(False, "with --cv: flip test-time augmentation")
    actors: int = opt(0, "with --cv: predicting actors (0 = one per GPU, else one per CPU)")
    address: str = opt("", "with --cv: Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def validate(self) -> "EvaluateConfig":
        if self.cv:
            _check(bool(self.data), "data", "is required with --cv (the raw dataset folder)")
        else:
            _check(bool(self.preds), "preds", "is required (or --cv EXPERIMENT)")
            _check(bool(self.labels), "labels", "is required")
        _check(self.nsd_tolerance > 0, "nsd_tolerance", "must be > 0")
        _check(self.actors >= 0, "actors", "must be >= 0")
        return self
