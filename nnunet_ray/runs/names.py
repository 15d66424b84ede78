"""Every name of the results tree: run folders, experiment folders, the preprocessed dim folders.

    <results>/<dataset>_<dim>d_fold<F>/            a `train` run (``train_run_name``; --experiment replaces it)
    <results>/<experiment>/<dim>d_fold<F>[_...]/   a trial of `cv` / `tune` (``fold_run_name`` + sweep values)
    <results>/<dataset>_cv | _tune | ...           an experiment's default name (``experiment_name``)
    <results>/<name>_bench_<N>w/                   a `train --benchmark` run on N workers (``bench_run_name``)
    <results>/<dataset>/<dim>d/                    preprocessed arrays, plans.json, splits.json (``dim_folder``)
"""

from __future__ import annotations

import re

# The kinds of experiment, each a suffix of the dataset's name when --name is not given.
EXPERIMENT_KINDS = ("cv", "tune", "sweep", "five_fold", "best_cv")
FOLD_RUN = re.compile(r"(\d)d_fold(\d+)")  # the start of every trial folder's name


def dim_folder(dim: int) -> str:
    """The preprocessed folder of one dimensionality inside ``<results>/<dataset>/``: ``3d``."""
    return f"{dim}d"


def fold_run_name(dim: int, fold: int) -> str:
    """A trial's run folder inside its experiment: ``3d_fold0`` (a sweep trial appends its values)."""
    return f"{dim_folder(dim)}_fold{fold}"


def parse_fold_run_name(name: str) -> tuple[int, int] | None:
    """(dim, fold) of a trial folder name (``fold_run_name``, with or without sweep values), else None."""
    match = FOLD_RUN.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def train_run_name(dataset: str, dim: int, fold: int) -> str:
    """A `train` run's stable default name: ``Task04_Hippocampus_3d_fold0`` (never a timestamp, so it resumes)."""
    return f"{dataset}_{fold_run_name(dim, fold)}"


def experiment_name(base: str, kind: str) -> str:
    """An experiment's default name: ``<base>_<kind>`` (``Task04_Hippocampus_cv``, ``..._five_fold_best_cv``)."""
    if kind not in EXPERIMENT_KINDS:
        raise ValueError(f"kind must be one of {EXPERIMENT_KINDS}, got {kind!r}")
    return f"{base}_{kind}"


def bench_run_name(name: str, workers: int) -> str:
    """A `train --benchmark` run of ``name`` on ``workers`` workers: ``<name>_bench_<workers>w``."""
    return f"{name}_bench_{workers}w"
