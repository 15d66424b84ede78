"""The resume policy: every option is classified, and a changed fixed option or plans is refused by name."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from nnunet_ray.config import ConfigError, TrainConfig
from nnunet_ray.data.folds import kfold_splits, save_splits, splits_hash
from nnunet_ray.model.unet import build_unet
from nnunet_ray.runs.checkpoint import latest_checkpoint, save_checkpoint
from nnunet_ray.runs.run_config import record_splits_hash
from nnunet_ray.training.resume import (
    FIXED_ON_RESUME,
    FREE_ON_RESUME,
    check_resume,
    data_splits_hash,
)
from tests.conftest import make_test_plans

PLANS = make_test_plans()


def test_every_train_option_is_fixed_or_free_on_resume():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not set(FIXED_ON_RESUME) & set(FREE_ON_RESUME)
    assert set(FIXED_ON_RESUME) | set(FREE_ON_RESUME) == fields


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with two checkpoints of an instance-norm model, as the Ray layer names them."""
    cfg = TrainConfig(data="d", results="r")
    torch.manual_seed(0)
    for epoch in (0, 1):
        save_checkpoint(tmp_path / "run" / f"epoch_{epoch:04d}", build_unet(PLANS), PLANS, cfg,
                        progress={"epoch": epoch})
    (tmp_path / "run" / "epoch_0002").mkdir()  # an incomplete folder is not a checkpoint
    return tmp_path / "run"


def test_latest_checkpoint_is_the_newest_complete_one(run_dir, tmp_path):
    assert latest_checkpoint(run_dir) == run_dir / "epoch_0001"
    assert latest_checkpoint(tmp_path / "nothing") is None


@pytest.mark.parametrize("change, flag", [
    ({"norm": "batch"}, "--norm"), ({"residual": True}, "--residual"), ({"deep_supervision": True},
                                                                        "--deep-supervision"),
    ({"optimizer": "sgd"}, "--optimizer"), ({"fold": 1}, "--fold"),
])
def test_changed_fixed_option_is_refused_by_name(run_dir, change, flag):
    cfg = TrainConfig(data="d", results="r", resume_training=True, **change)
    with pytest.raises(ConfigError, match=f"^{flag}: .*run 'run' was trained with"):
        check_resume(cfg, PLANS, run_dir)


def test_other_plans_are_refused_naming_data(run_dir):
    cfg = TrainConfig(data="d", results="r", resume_training=True)
    with pytest.raises(ConfigError, match="^--data: its plans differ .*patch \\[16, 16, 16\\] -> \\[32, 32, 32\\]"):
        check_resume(cfg, dataclasses.replace(PLANS, patch_size=[32, 32, 32]), run_dir)


def test_free_options_pass_and_a_new_learning_rate_is_noted(run_dir, caplog):
    cfg = TrainConfig(data="elsewhere", results="r", resume_training=True, max_epochs=50, patience=3,
                      learning_rate=0.01, workers=4)
    with caplog.at_level(logging.WARNING, logger="nnunet_ray.training.resume"):
        check_resume(cfg, PLANS, run_dir)
    assert "--learning-rate: 0.01 (was 0.001) applies from the next epoch" in caplog.text
    assert "--workers" not in caplog.text


IDS = [f"case_{i}" for i in range(6)]


@pytest.mark.parametrize("recorded, folds, refused", [
    (3, 3, False),  # the same folds
    (3, 2, True),  # `preprocess --new-splits` made others since
    (None, 2, False),  # a run recorded before the hash existed is accepted
])
def test_resume_on_other_folds_is_refused_naming_the_run(run_dir, tmp_path, recorded, folds, refused):
    data = tmp_path / "data"
    save_splits(data, kfold_splits(IDS, n_splits=folds))
    if recorded is not None:
        record_splits_hash(latest_checkpoint(run_dir), splits_hash(kfold_splits(IDS, n_splits=recorded)))
    cfg = TrainConfig(data=str(data), results="r", resume_training=True)
    if refused:
        with pytest.raises(ConfigError, match=r"^--data: its splits.json \(hash \w{16}\) is not the one run 'run' "
                                              r"was trained on \(hash \w{16}\)"):
            check_resume(cfg, PLANS, run_dir)
    else:
        check_resume(cfg, PLANS, run_dir)


def test_recorded_splits_hash_sits_beside_the_config(run_dir):
    checkpoint = latest_checkpoint(run_dir)
    record_splits_hash(checkpoint, "0123456789abcdef")
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["splits_hash"] == "0123456789abcdef" and config["fold"] == 0


def test_data_splits_hash(tmp_path):
    assert data_splits_hash(tmp_path) is None  # no splits.json: nothing to compare
    save_splits(tmp_path, kfold_splits(IDS, n_splits=2))
    assert data_splits_hash(tmp_path) == splits_hash(kfold_splits(IDS, n_splits=2))
    (tmp_path / "splits.json").write_text("[{")
    with pytest.raises(ConfigError, match=r"^--data: .*splits.json: invalid JSON"):
        data_splits_hash(tmp_path)
