"""A fold's cases and the check that its arrays were made with the plans training reads."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from nnunet_ray.config import ConfigError
from nnunet_ray.data.folds import fold_case_ids
from nnunet_ray.loading.fold_data import check_fold_arrays
from nnunet_ray.planning.schema import load_plans, save_plans
from tests.training.conftest import build_tiny_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_tiny_task(tmp_path_factory.mktemp("fold_task"), dim=3)


@pytest.fixture
def copy(task, tmp_path):
    return shutil.copytree(task, tmp_path / "3d")


def test_arrays_made_with_the_plans_pass(task):
    check_fold_arrays(task, 0, load_plans(task))


def test_a_network_only_change_keeps_the_arrays_valid(copy):
    plans = load_plans(copy)
    save_plans(copy, dataclasses.replace(plans, filters=[f * 2 for f in plans.filters]))
    check_fold_arrays(copy, 0, load_plans(copy))


def test_arrays_made_with_other_plans_are_refused_naming_the_fix(copy):
    plans = load_plans(copy)
    save_plans(copy, dataclasses.replace(plans, spacing=[s * 2 for s in plans.spacing]))
    with pytest.raises(ConfigError, match="--data: 6 case\\(s\\) of fold 0 .*rerun `nnunet-ray preprocess`"):
        check_fold_arrays(copy, 0, load_plans(copy))


def test_a_missing_case_json_is_stale(copy):
    train_ids, _ = fold_case_ids(copy, 1)
    (copy / f"{train_ids[0]}.json").unlink()
    with pytest.raises(ConfigError, match=f"1 case\\(s\\) of fold 1 \\({train_ids[0]}\\)"):
        check_fold_arrays(copy, 1, load_plans(copy))
