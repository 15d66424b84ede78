"""Configs of the stage commands: synth, download, plan, preprocess, train (one fold)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nnunet_ray.config.base import _check, _check_fields, opt


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
class PlanningOptions:
    """Planning: what plan and preprocess (which plans when no plans.json exists yet) declare once."""

    data: str = opt("", "raw dataset folder holding dataset.json")
    results: str = opt("", "preprocessed root: plans.json (and preprocess's arrays) go to RESULTS/<dataset>/<dim>d/ "
                       "(plan without it: print only)")
    dim: int = opt(3, "U-Net dimensionality", choices=(2, 3))
    min_fmap: int = opt(4, "smallest feature-map edge at the bottleneck (when planning)")
    max_depth: int = opt(6, "maximum number of downsamplings (when planning)")
    memory_budget_mvox: float = opt(
        0.0, "patch-size budget in megavoxels for automatic planning (0 = the default per dim)")
    address: str = opt("", "Ray cluster to join ('auto' for a running one); empty starts a local cluster")

    def planning(self) -> PlanConfig:
        """The planning options alone, as `nnunet-ray plan` takes them."""
        return PlanConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PlanningOptions)})

    def check_planning(self) -> None:
        """Raises ConfigError naming the flag of a planning option out of range."""
        _check(bool(self.data), "data", "is required")
        _check_fields(self)
        _check(self.min_fmap >= 1, "min_fmap", "must be >= 1")
        _check(1 <= self.max_depth <= 8, "max_depth", "must be in 1..8")
        _check(self.memory_budget_mvox >= 0, "memory_budget_mvox", "must be >= 0")


@dataclass(frozen=True)
class PlanConfig(PlanningOptions):
    """`nnunet-ray plan`: fingerprint a raw dataset and write plans.json."""

    print_plans: bool = opt(False, "write the plans JSON to stdout", cli="--print")

    def validate(self) -> "PlanConfig":
        self.check_planning()
        return self


@dataclass(frozen=True)
class PreprocessConfig(PlanningOptions):
    """`nnunet-ray preprocess`: plan (if needed) and write preprocessed arrays with Ray Data."""

    exec_mode: str = opt("training", "which cases: training (with labels), val (labels kept, no padding), "
                         "test (imagesTs)", choices=("training", "val", "test"))
    case_workers: int = opt(0, "parallel case workers (0 = one per available CPU)",
                            aliases=("--num-workers", "--num_workers"))
    nfolds: int = opt(5, "cross-validation folds written to splits.json (KFold, shuffled with seed 12345) when it "
                      "does not exist yet; an existing one is kept (see --new-splits)")
    splits: str = opt("", "import the folds from this nnU-Net v2 splits_final.json instead of making --nfolds "
                      "(checked: every id a case, each case validated in exactly one fold); replaces splits.json")
    new_splits: bool = opt(False, "replace an existing splits.json with new --nfolds folds over the cases "
                           "preprocessed now: needed once cases were added, removed or now succeed, which a plain "
                           "rerun refuses; runs trained on the old folds then refuse to resume or to ensemble")

    def validate(self) -> "PreprocessConfig":
        self.check_planning()
        _check(bool(self.results), "results", "is required")
        _check(self.case_workers >= 0, "case_workers", "must be >= 0")
        _check(self.nfolds >= 2, "nfolds", "must be >= 2")
        _check(not self.splits or self.exec_mode == "training", "splits", "needs --exec-mode training")
        _check(not self.new_splits or self.exec_mode == "training", "new_splits", "needs --exec-mode training")
        _check(not (self.new_splits and self.splits), "new_splits", "cannot go with --splits (which imports folds)")
        return self
