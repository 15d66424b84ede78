"""A checkpoint's config.json as a typed record: round trip, older files, and one-line errors naming the file."""

import dataclasses
import json

import pytest
import torch

from nnunet_ray.config import ConfigError, TrainConfig
from nnunet_ray.data.records import RecordError
from nnunet_ray.model.unet import build_unet
from nnunet_ray.runs.checkpoint import CheckpointError, load_model, save_checkpoint
from nnunet_ray.runs.run_config import (
    CONFIG_FILE,
    RunConfig,
    load_run_config,
    record_splits_hash,
    save_run_config,
)
from nnunet_ray.training.resume import check_resume
from tests.conftest import make_test_plans

CFG = TrainConfig(data="pre", results="res", fold=2, learning_rate=3e-3, patch_size=(8, 8, 8), residual=True)


def test_round_trip_keeps_every_option_and_the_splits_hash(tmp_path):
    save_run_config(tmp_path, RunConfig(CFG, splits_hash="0123456789abcdef"))
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert saved["learning_rate"] == 3e-3 and saved["patch_size"] == [8, 8, 8] and saved["version"] == 1
    assert load_run_config(tmp_path) == RunConfig(CFG, splits_hash="0123456789abcdef")


def test_a_file_from_before_the_version_key_reads_with_defaults_for_later_options(tmp_path):
    # What an early checkpoint held: fewer options, no version, no splits_hash.
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"data": "pre", "results": "res", "fold": 1, "dim": 2,
                                                    "an_option_since_removed": 7}))
    loaded = load_run_config(tmp_path)
    assert loaded.train == TrainConfig(data="pre", results="res", fold=1, dim=2) and loaded.splits_hash is None


def test_stamping_the_splits_hash_keeps_the_options(tmp_path):
    save_run_config(tmp_path, RunConfig(CFG))
    record_splits_hash(tmp_path, None)  # nothing to record: untouched
    assert load_run_config(tmp_path).splits_hash is None
    record_splits_hash(tmp_path, "aaaabbbbccccdddd")
    assert load_run_config(tmp_path) == RunConfig(CFG, splits_hash="aaaabbbbccccdddd")


@pytest.mark.parametrize("text, problem", [
    ('{"fold": ', r"not JSON"),
    ('[1, 2]', r"not a run config \(expected a JSON object\)"),
    ('{"version": 9, "fold": 0}', r"version 9 is newer than this nnunet_ray reads \(1\)"),
    ('{"data": "pre", "results": "res", "fold": -1}',
     r"not a run config this nnunet_ray reads \(--fold: must be >= 0\)"),
    ('{"data": "pre", "results": "res", "patch_size": 5}', r"not a run config this nnunet_ray reads"),
])
def test_a_broken_file_is_one_error_naming_it(tmp_path, text, problem):
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(RecordError, match=rf"^{tmp_path / CONFIG_FILE}: {problem}"):
        load_run_config(tmp_path)


def test_checkpoint_readers_name_a_broken_config(tmp_path):
    """predict / evaluate (load_model) and --resume-training (check_resume) each say which file is broken."""
    plans = make_test_plans()
    run = tmp_path / "run"
    save_checkpoint(run / "epoch_0000", build_unet(plans), plans, CFG)
    (run / "epoch_0000" / CONFIG_FILE).write_text('{"version": 2}')
    with pytest.raises(CheckpointError, match=r"epoch_0000/config.json: version 2 is newer"):
        load_model(run / "epoch_0000")
    resumed = dataclasses.replace(CFG, resume_training=True)
    with pytest.raises(ConfigError, match=r"^--resume-training: run 'run' has an unreadable checkpoint \(.*epoch_0000/"
                                          r"config.json: version 2 is newer"):
        check_resume(resumed, plans, run)


def test_the_model_is_rebuilt_from_the_recorded_options(tmp_path):
    plans = make_test_plans()
    torch.manual_seed(0)
    save_checkpoint(tmp_path, build_unet(plans, residual=True), plans, CFG)
    model, _, config = load_model(tmp_path)  # a strict load: residual blocks only load into a residual network
    assert config.train.residual and config.train.fold == 2
