"""Configs of the commands that run many trainings or predictions: cv, tune (Ray Tune), predict, evaluate."""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_ray.config.base import ConfigError, _check, _check_fields, flag_name, opt, parse_duration
from nnunet_ray.config.train import TrainConfig, check_gpus
from nnunet_ray.config.window import SlidingWindow

GPUS_PER_TRIAL_HELP = ("GPU workers per trial (DDP, one GPU each); 0 trains on CPU workers; a fraction below 1 "
                       "packs single-worker trials on one GPU (0.5: two per GPU)")
ENGINES = ("auto", "tune", "train")
ENGINE_HELP = ("what runs a trial: tune (the fold trains inside the Ray Tune trial: one worker only, seconds of "
               "overhead), train (a Ray Train TorchTrainer with DDP workers), auto (tune for one worker, else train)")
MAX_CONCURRENT_HELP = ("Ray Train trials (several workers) at once; 0 = as many as the cluster holds at its largest "
                       "(an autoscaling cluster's node types at max_workers). Single-worker trials need no cap: Tune "
                       "places them by their declared resources")
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


@dataclass(frozen=True)
class ExperimentOptions:
    """Experiment: what cv and tune declare once (data, results root, how trials hold devices, resume)."""

    data: str = opt("", "raw dataset folder (dataset.json: planned and preprocessed first) or a preprocessed "
                    "folder PRE/<dataset>/<dim>d")
    results: str = opt("", "results root (Ray's storage_path); the experiment goes to RESULTS/NAME/")
    gpus_per_trial: float = opt(0.0, GPUS_PER_TRIAL_HELP)
    workers_per_trial: int = opt(1, "CPU workers per trial when --gpus-per-trial is 0")
    engine: str = opt("auto", ENGINE_HELP, choices=ENGINES)
    max_concurrent_trials: int = opt(0, MAX_CONCURRENT_HELP)
    resume: bool = opt(False, "continue experiment NAME (Tuner.restore): finished trials are kept, interrupted "
                       "ones continue from their last checkpoint")
    preprocessed: str = opt("", "where a raw dataset is preprocessed to (default RESULTS/preprocessed)")
    name: str = opt("", "experiment name, a folder under RESULTS (default <dataset>_cv / <dataset>_tune); an "
                    "existing one is only continued with --resume")
    folds: str = opt("0-4", "folds to train: 0-4, 0,2 or 3")

    def check_experiment(self) -> None:
        """Raises ConfigError naming the flag of an experiment option that is missing or out of range."""
        _check(bool(self.data), "data", "is required")
        _check(bool(self.results), "results", "is required")
        _check("/" not in self.name and not self.name.startswith("."), "name",
               f"{self.name!r} must be a plain folder name")
        _check(self.workers_per_trial >= 1, "workers_per_trial", "must be >= 1")
        _check(self.max_concurrent_trials >= 0, "max_concurrent_trials", "must be >= 0")
        check_gpus(self.gpus_per_trial, "gpus_per_trial", workers=self.workers_per_trial)
        _check_fields(self)
        workers = max(1, int(self.gpus_per_trial)) if self.gpus_per_trial else self.workers_per_trial
        _check(self.engine != "tune" or workers == 1, "engine",
               f"tune trains one worker per trial; this trial has {workers} (use --engine train or auto)")
        parse_int_list(self.folds, "folds")


@dataclass(frozen=True)
class CVConfig(ExperimentOptions):
    """`nnunet-ray cv`: every (fold, dim) one Ray Tune trial, as many at once as the cluster holds."""

    dims: str = opt("3", "dims to cross-validate: 3, 2 or 2,3")
    config: str = opt("", "JSON file of training options (e.g. tune's best_config.json); its values replace "
                      "options left at their defaults")
    train: TrainConfig = opt(TrainConfig(), "training options of every trial", nested=TRIAL_FIELDS + ("dim",))

    def validate(self) -> "CVConfig":
        self.check_experiment()
        _check(set(parse_int_list(self.dims, "dims")) <= {2, 3}, "dims", f"{self.dims!r}: dims are 2 and/or 3")
        return self


@dataclass(frozen=True)
class TuneConfig(ExperimentOptions):
    """`nnunet-ray tune`: a learning-rate x patch-size (or any training option) sweep on Ray Tune with ASHA."""

    folds: str = opt("0", "folds every configuration trains on; its score is the mean over them")
    learning_rate: str = opt("", "learning-rate space: loguniform:1e-4:1e-2, uniform:A:B, choice:1e-3,3e-3, "
                             "grid:1e-3,3e-3 or one value (empty = --search-space; with no search flag at all, "
                             "loguniform over a range for the optimizer: Adam/RAdam 1e-4:1e-2, SGD 1e-3:1e-1)")
    patch_size: tuple[str, ...] = opt((), "patch sizes to choose from, e.g. 64,96,80 80,112,96 (empty = the plans')")
    search_space: str = opt("", "YAML file: training option -> {choice|grid|uniform|loguniform: values}")
    num_samples: int = opt(4, "configurations drawn from the space (grid values: each one num-samples times)")
    scheduler: str = opt("asha", "trial scheduler: asha stops poor trials at epoch milestones",
                         choices=("asha", "none"))
    grace_period: int = opt(1, "ASHA: epochs every trial trains before it can be stopped")
    reduction_factor: int = opt(2, "ASHA: keep the best 1/N of trials at each milestone")
    search: str = opt("random", "how configurations are drawn: random (each independently) or optuna (Optuna's TPE "
                      "learns from finished trials; one fold, no grid values)", choices=("random", "optuna"))
    search_seed: int = opt(0, "seed of the search (the same seed draws the same first configurations)")
    budget: str = opt("", "wall time of the whole sweep, HH:MM:SS, from its first trial: then no further trial starts, "
                      "running ones are stopped, and the results so far are written (empty = no limit)")
    train: TrainConfig = opt(TrainConfig(), "training options of every trial (the swept ones vary)",
                             nested=TRIAL_FIELDS)

    def validate(self) -> "TuneConfig":
        self.check_experiment()
        _check_fields(self)
        _check(self.num_samples >= 1, "num_samples", "must be >= 1")
        _check(self.grace_period >= 1, "grace_period", "must be >= 1")
        _check(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        _check(self.search_seed >= 0, "search_seed", "must be >= 0")
        if self.budget:
            parse_duration(self.budget, "budget")
        # A configuration's folds are separate trials (a grid in param_space); TPE scores one configuration per
        # trial and cannot grid-search, so an Optuna sweep tunes on one fold and cv --config cross-validates it.
        _check(self.search != "optuna" or len(parse_int_list(self.folds, "folds")) == 1, "folds",
               f"{self.folds!r}: --search optuna tunes on one fold (TPE cannot repeat a configuration over "
               "folds); pass e.g. --folds 0, then run cv --config best_config.json on every fold")
        return self

    @property
    def budget_seconds(self) -> float | None:
        """``--budget`` in seconds, or None without a limit."""
        return parse_duration(self.budget, "budget") if self.budget else None


@dataclass(frozen=True)
class PredictConfig(SlidingWindow):
    """`nnunet-ray predict`: ensemble prediction of raw images on a Ray actor pool, written in the input geometry."""

    models: tuple[str, ...] = opt((), "checkpoint folders, or experiment / run folders (each training run's best "
                                  "checkpoint under them joins the ensemble: every fold, and every dim present)")
    input: str = opt("", "images to predict: a dataset folder (its test cases) or a folder of NIfTI files; a path or "
                     "an s3:// / gs:// URI (each actor downloads the cases it predicts)")
    out: str = opt("", "prediction folder: <case>.nii.gz label maps, predict.json (a rerun skips finished cases)")
    amp: bool = opt(False, "mixed precision: autocast on CUDA in each model's training --amp-dtype (fp16 by "
                    "default), bf16 on CPU")
    actors: int = opt(0, "predicting actors, each holding every member (0 = one per GPU, else one per "
                      "--cpus-per-actor CPUs)")
    gpus_per_actor: float = opt(1.0, "GPUs per actor where the cluster has GPUs (fractions share a GPU)")
    cpus_per_actor: int = opt(1, "CPUs per actor (its torch threads)")
    sw_device: str = opt("model", "where whole-volume accumulators live: 'model' (the model's device) or 'cpu' "
                         "(host memory while windows run on the GPU: large CT volumes)", choices=("model", "cpu"))
    save_probabilities: bool = opt(False, "also write <case>.npz: float16 class probabilities on the original grid")
    overwrite: bool = opt(False, "start --out over: remove the predictions its predict.json records (and the record) "
                          "first; other files are kept")
    postprocess: bool = opt(False, "apply the post-processing cross-validation chose (best_configuration.json of "
                            "the --models experiment: keep the largest connected component of some classes)")
    address: str = opt("", "Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def validate(self) -> "PredictConfig":
        _check(bool(self.models), "models", "is required (checkpoint or experiment folders)")
        _check(bool(self.input), "input", "is required")
        _check(bool(self.out), "out", "is required")
        _check_fields(self)
        _check(self.actors >= 0, "actors", "must be >= 0")
        _check(self.gpus_per_actor > 0, "gpus_per_actor", "must be > 0")
        _check(self.cpus_per_actor >= 1, "cpus_per_actor", "must be >= 1")
        self.check_window()
        return self


@dataclass(frozen=True)
class EvaluateConfig(SlidingWindow):
    """`nnunet-ray evaluate`: Dice, HD95 and normalised surface Dice of predictions against reference labels."""

    preds: str = opt("", "folder of predicted label maps (<case>.nii.gz)")
    labels: str = opt("", "folder of reference label maps with the same file names")
    nsd_tolerance: float = opt(1.0, "normalised surface Dice tolerance in mm")
    out: str = opt("", "where summary.json and summary.csv go (default: the --preds folder)")
    allow_missing: bool = opt(False, "score the cases that have a prediction when some labels have none (their "
                              "count goes to summary.json); without it, labels without a prediction are an error")
    # --- cross-validation in the original space (instead of --preds / --labels)
    cv: str = opt("", "experiment folder: predict every fold's validation cases with its best checkpoint and score "
                  "them against the raw labels (needs --data)")
    data: str = opt("", "with --cv: the raw dataset folder the experiment was trained on (a path or an s3:// / gs:// "
                    "URI)")
    actors: int = opt(0, "with --cv: predicting actors (0 = one per GPU, else one per CPU)")
    overwrite: bool = opt(False, "with --cv: predict every fold again, replacing EXPERIMENT/cv_predictions (needed "
                          "when they were made with other checkpoints or options, e.g. another --tta)")
    address: str = opt("", "with --cv: Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def validate(self) -> "EvaluateConfig":
        if self.cv:
            _check(bool(self.data), "data", "is required with --cv (the raw dataset folder)")
            _check(not self.allow_missing, "allow_missing", "goes with --preds / --labels; --cv predicts and "
                   "scores every validation case")
            for name in ("preds", "labels", "out"):  # --cv writes into the experiment folder, from its own runs
                _check(not getattr(self, name), name, "goes without --cv (--cv predicts the validation cases into "
                       "EXPERIMENT/cv_predictions and writes its scores next to them)")
        else:
            _check(not self.overwrite, "overwrite", "goes with --cv (it replaces earlier fold predictions)")
            for name in ("data", "address"):
                _check(not getattr(self, name), name, "goes with --cv (--preds are scored as they are)")
            _check(self.actors == 0, "actors", "goes with --cv (--preds are scored as they are)")
            _check(bool(self.preds), "preds", "is required (or --cv EXPERIMENT)")
            _check(bool(self.labels), "labels", "is required")
            _check(self.window() == SlidingWindow(), "tta", "and the other sliding-window options go with --cv "
                   "(--preds are scored as they are)")
        _check(self.nsd_tolerance > 0, "nsd_tolerance", "must be > 0")
        _check(self.actors >= 0, "actors", "must be >= 0")
        self.check_window()
        return self
