"""Checkpoint directory: round trip to identical logits, weights_only loading, resume state, best/last keeping."""

import math

import pytest
import torch

from nnunet_ray.config import TrainConfig
from nnunet_ray.model.unet import build_unet
from nnunet_ray.runs.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    LocalCheckpoints,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from nnunet_ray.training.schedules import LRSchedule
from tests.conftest import make_test_plans

torch.set_num_threads(1)

PLANS = make_test_plans(in_channels=2, modalities=("T1", "T2"), patch_size=[8, 8, 8], kernels=[[3, 3, 3]] * 3,
                        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], filters=[4, 8, 16])


def _trained(config: TrainConfig):
    """A model, optimizer and scaler after two real steps, so every state is non-trivial."""
    torch.manual_seed(0)
    model = build_unet(PLANS, norm=config.norm, residual=config.residual, deep_supervision=config.deep_supervision)
    opt = torch.optim.RAdam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(2):
        out = model(torch.randn(2, 2, 8, 8, 8))
        loss = (out[0] if isinstance(out, list) else out).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt, scaler


@pytest.mark.parametrize("options", [{}, {"residual": True, "deep_supervision": True, "norm": "batch"}])
def test_model_from_checkpoint_alone_gives_identical_logits(tmp_path, options):
    config = TrainConfig(data="d", results="r", **options)
    model, opt, scaler = _trained(config)
    save_checkpoint(tmp_path / "ckpt", model, PLANS, config, optimizer=opt, scaler=scaler,
                    schedule=LRSchedule(1e-3).state_dict(), progress={"epoch": 4, "best_dice": 0.5})
    loaded, plans, loaded_config = load_model(tmp_path / "ckpt")
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert plans == PLANS and loaded_config.train == config and loaded_config.splits_hash is None
    assert not loaded.training


def test_checkpoint_restores_optimizer_scaler_schedule_and_progress(tmp_path):
    config = TrainConfig(data="d", results="r")
    model, opt, _ = _trained(config)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    schedule = LRSchedule(1e-3, scheduler="plateau", lr_patience=0)
    schedule.observe(1.0)
    schedule.observe(2.0)
    progress = {"epoch": 7, "best_dice": 0.25, "best_epoch": 5, "bad_epochs": 2,
                "metrics": {"dice_mean": float("nan"), "dice": [0.1, 0.2]}}
    save_checkpoint(tmp_path, model, PLANS, config, optimizer=opt, scaler=scaler,
                    schedule=schedule.state_dict(), progress=progress)
    state = load_checkpoint(tmp_path)
    assert state["progress"]["epoch"] == 7 and state["progress"]["best_epoch"] == 5
    assert math.isnan(state["progress"]["metrics"]["dice_mean"])
    assert state["scaler"]["scale"] == 1024.0
    assert state["schedule"] == schedule.state_dict()
    opt2 = torch.optim.RAdam(build_unet(PLANS).parameters(), lr=1.0)
    opt2.load_state_dict(state["optimizer"])
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # Both binary files are plain tensors and containers: the safe loader reads them.
    torch.load(tmp_path / MODEL_FILE, weights_only=True)
    torch.load(tmp_path / STATE_FILE, weights_only=True)


def test_incomplete_checkpoint_names_the_missing_file(tmp_path):
    config = TrainConfig(data="d", results="r")
    save_checkpoint(tmp_path, build_unet(PLANS), PLANS, config)
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing model.pt"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="missing model.pt"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(tmp_path / "nowhere")


def _epoch_checkpoint(path, epoch, dice):
    config = TrainConfig(data="d", results="r")
    return save_checkpoint(path / f"tmp{epoch}", build_unet(PLANS), PLANS, config,
                           progress={"epoch": epoch, "metrics": {"dice_mean": dice}})


def test_local_checkpoints_keep_last_and_best(tmp_path):
    keeper = LocalCheckpoints(tmp_path / "run")
    for epoch, dice in enumerate([0.2, float("nan"), 0.5, 0.4]):
        keeper({"epoch": epoch, "dice_mean": dice}, _epoch_checkpoint(tmp_path, epoch, dice))
    keeper({"epoch": 9}, None)  # a rank without a checkpoint: nothing happens
    assert load_checkpoint(keeper.last)["progress"]["epoch"] == 3
    assert load_checkpoint(keeper.best)["progress"]["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best", "last"]
    # A new keeper on the same folder (a resumed run) remembers the best score.
    again = LocalCheckpoints(tmp_path / "run")
    assert again.best_score == 0.5
    again({"epoch": 4, "dice_mean": 0.45}, _epoch_checkpoint(tmp_path, 4, 0.45))
    assert load_checkpoint(again.best)["progress"]["epoch"] == 2
