"""The data of a ``cv`` / ``tune`` experiment: a raw dataset (preprocessed first) or preprocessed folders.

Everything here that can fail on bad input runs before Ray starts: the dataset must have labels, the folds must
exist, a ``--config`` file must name real training options, and ``--resume`` must find the folds its runs were
trained on.
"""

from __future__ import annotations

import dataclasses
import logging

from nnunet_ray.config import (
    ConfigError,
    PreprocessConfig,
    flag_name,
)
from nnunet_ray.config.runs import ExperimentOptions
from nnunet_ray.data import storage
from nnunet_ray.data.dataset import DATASET_FILE
from nnunet_ray.data.folds import SPLITS_FILE, load_splits, split_case_ids, splits_location
from nnunet_ray.data.staging import open_raw_dataset
from nnunet_ray.distributed.run_storage import resume_view
from nnunet_ray.distributed.trial_spec import check_experiment_folder, experiment_folder
from nnunet_ray.planning.schema import PLANS_FILE, PlansError, load_plans
from nnunet_ray.runs.checkpoint import latest_checkpoint, read_config
from nnunet_ray.runs.names import dim_folder, experiment_name, parse_fold_run_name
from nnunet_ray.training.resume import check_splits, data_splits_hash

RAW_FOLDS = PreprocessConfig().nfolds  # folds written when cv preprocesses a raw dataset itself

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExperimentData:
    """Where each dim's preprocessed folder is (or will be, for ``raw``), and the dataset's name."""

    dataset: str
    dirs: dict[int, str]
    raw: str = ""  # the raw dataset folder when it still has to be (partly) preprocessed
    preprocessed_root: str = ""


def resolve_data(data: str, dims: tuple[int, ...], *, results: str, preprocessed: str = "") -> ExperimentData:
    """Find the preprocessed folder of every dim for ``--data``.

    Args:
        data: a raw dataset (dataset.json), a preprocessed dim folder (plans.json) or PRE/<dataset> holding
            <dim>d folders; a path or a URI.
        dims: the dims the experiment trains.
        results: the results root (path or URI); a raw dataset is preprocessed to ``preprocessed`` or
            RESULTS/preprocessed.

    Raises:
        ConfigError / DatasetError: naming --data or --dims and the problem.
    """
    root = storage.absolute(data)
    if storage.is_file(storage.join(root, DATASET_FILE)):
        dataset, _ = open_raw_dataset(root)  # a URI is staged on this node to check its labels
        unlabelled = [c.case_id for c in dataset.training if c.label is None or not c.label.is_file()]
        if unlabelled:
            raise ConfigError(f"{flag_name('data')}: {storage.display(root)} has no label file for {len(unlabelled)} "
                              f"of {len(dataset.training)} training cases (first: {unlabelled[0]}); training needs "
                              "labels")
        pre = storage.absolute(preprocessed or storage.join(results, "preprocessed"))
        return ExperimentData(dataset.name, {d: storage.join(pre, dataset.name, dim_folder(d)) for d in dims},
                              raw=root, preprocessed_root=pre)
    if storage.is_file(storage.join(root, PLANS_FILE)):
        try:
            dim = load_plans(root).dim
        except PlansError as err:
            raise ConfigError(f"{flag_name('data')}: {err}") from err
        if set(dims) != {dim}:
            raise ConfigError(f"{flag_name('dims')}: {storage.display(root)} holds {dim}d data only; pass --dims "
                              f"{dim} (or --dim)")
        return ExperimentData(storage.basename(storage.parent(root)), {dim: root})
    missing = [d for d in dims if not storage.is_file(storage.join(root, dim_folder(d), PLANS_FILE))]
    if not missing:
        return ExperimentData(storage.basename(root), {d: storage.join(root, dim_folder(d)) for d in dims})
    listed = " for " + ", ".join(f"{d}d" for d in missing) if storage.is_dir(root) else ""
    raise ConfigError(f"{flag_name('data')}: {storage.display(root)} is neither a raw dataset (dataset.json) nor "
                      f"preprocessed data (plans.json{listed})")


def check_folds(data: ExperimentData, folds: tuple[int, ...]) -> None:
    """Every requested fold exists (and every case of a preprocessed folder has its label array).

    Raises:
        ConfigError: naming --folds or --data.
    """
    for dim, folder in data.dirs.items():
        names = set(storage.list_names(folder))  # one listing, not one request per case on object storage
        if SPLITS_FILE in names:
            splits = load_splits(folder)
            cases = sorted(split_case_ids(splits))
            unlabelled = [c for c in cases if f"{c}_y.npy" not in names]
            if unlabelled:
                raise ConfigError(f"{flag_name('data')}: {storage.display(folder)} has no label array for "
                                  f"{len(unlabelled)} cases (first: {unlabelled[0]}_y.npy); training needs labels")
            n_folds = len(splits)
        elif data.raw:
            n_folds = min(RAW_FOLDS, len(open_raw_dataset(data.raw)[0].training))
        else:
            raise ConfigError(f"{flag_name('data')}: {storage.display(splits_location(folder))} not "
                              "found; run `nnunet-ray preprocess` first")
        bad = [f for f in folds if f >= n_folds]
        if bad:
            raise ConfigError(f"{flag_name('folds')}: fold {bad[0]} does not exist: {dim}d data has {n_folds} "
                              f"folds (0-{n_folds - 1})")


def check_resumed_splits(path: str, data_dirs: dict[int, str]) -> None:
    """``--resume``: every run of the experiment at ``path`` trained on the folds its dim's data holds now.

    A `preprocess --new-splits` in between would otherwise continue the unfinished folds (and summarise the finished
    ones) on other folds than they started with. Runs recorded before the splits hash existed are accepted.

    Args:
        path: the experiment folder (path or URI), one run folder per trial (``<dim>d_fold<F>...``).
        data_dirs: dim -> the preprocessed folder the trials train on (the experiment's spec).

    Raises:
        ConfigError: naming --data and the first run trained on other folds (``training.resume.check_splits``).
    """
    current = {dim: data_splits_hash(folder) for dim, folder in data_dirs.items()}
    for name in storage.list_names(path):
        trial = parse_fold_run_name(name)
        if trial is None or trial[0] not in current:
            continue
        with resume_view(storage.join(path, name)) as local:
            checkpoint = latest_checkpoint(local)
            if checkpoint is not None:
                check_splits(read_config(checkpoint).splits_hash, current[trial[0]], name)


def preprocess_raw(data: ExperimentData, *, address: str) -> None:
    """Plan and preprocess the raw dataset for every dim on Ray Data (finished cases are skipped).

    Raises:
        ConfigError: a case failed to preprocess (named in the message).
    """
    from nnunet_ray.distributed.preprocess import preprocess_dataset

    for dim in data.dirs:
        logger.info("preprocessing %s (%dd) into %s", data.dataset, dim, data.preprocessed_root)
        summary = preprocess_dataset(PreprocessConfig(data=data.raw, results=data.preprocessed_root, dim=dim,
                                                      address=address))
        logger.info("%s", summary.line())
        if not summary.ok:
            case, error = next(iter(summary.failed.items()))
            raise ConfigError(f"{flag_name('data')}: {len(summary.failed)} cases failed to preprocess "
                              f"(first: {case}: {error})")


def open_experiment(cfg: ExperimentOptions, dims: tuple[int, ...], folds: tuple[int, ...],
                    kind: str) -> tuple[ExperimentData, str]:
    """The data an experiment's trials train on (its folds checked) and its folder: a new one, or with ``--resume``
    one that exists (``kind`` names the default: ``<dataset>_<kind>``).

    Raises:
        ConfigError / DatasetError: before Ray starts.
    """
    storage.check_writable_here(cfg.results, "results")
    data = resolve_data(cfg.data, dims, results=cfg.results, preprocessed=cfg.preprocessed)
    check_folds(data, folds)
    path = experiment_folder(cfg.results, cfg.name or experiment_name(data.dataset, kind))
    check_experiment_folder(path, resume=cfg.resume)
    return data, path
