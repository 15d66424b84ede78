"""Ensemble members must come from one cross-validation: the same folds (splits hash) across members."""

import pytest

from nnunet_ray.config import ConfigError, TrainConfig
from nnunet_ray.inference.members import Member, check_compatible, check_same_splits
from nnunet_ray.runs.run_config import RunConfig
from tests.conftest import make_test_plans


def _member(path: str, splits_hash: str | None, fold: int = 0) -> Member:
    config = RunConfig(TrainConfig(data="d", results="r", fold=fold), splits_hash=splits_hash)
    return Member(path=path, plans=make_test_plans(), config=config, weights={})


@pytest.mark.parametrize("hashes, refused", [
    (["aaaa", "aaaa", "aaaa"], False),  # folds 0-2 of one cross-validation
    (["aaaa", None, "aaaa"], False),  # a checkpoint recorded before the hash existed is not compared
    ([None, None], False),
    (["aaaa", "aaaa", "bbbb"], True),  # a fold trained after `preprocess --new-splits` made other folds
])
def test_members_trained_on_other_folds_are_refused(hashes, refused):
    members = [_member(f"/runs/fold{i}/best", h, fold=i) for i, h in enumerate(hashes)]
    if refused:
        with pytest.raises(ConfigError, match=r"^--models: /runs/fold2/best was trained on other folds \(splits hash "
                                              r"bbbb\) than /runs/fold0/best \(splits hash aaaa\)"):
            check_compatible(members)
    else:
        check_compatible(members)


def test_the_check_names_the_flag_it_is_given():
    with pytest.raises(ConfigError, match="^--cv: run_b was trained on other folds"):
        check_same_splits([("run_a", "aaaa"), ("run_b", "bbbb")], flag="--cv")
