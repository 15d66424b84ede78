"""--recipe: the named sets of defaults resolve as the CLI builds a config (a flag given wins, even one equal to a
default), a run records the resolved values, and configs move between recipes keeping what the user chose."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from nnunet_ray.cli import _config_from, build_parser
from nnunet_ray.config import (
    RECIPES,
    ConfigError,
    CVConfig,
    TrainConfig,
    TuneConfig,
    apply_recipe,
    chosen_options,
    with_options,
)
from nnunet_ray.data.folds import load_splits
from nnunet_ray.loading.iterators import eval_loader
from nnunet_ray.planning.schema import load_plans
from nnunet_ray.runs.checkpoint import LocalCheckpoints, load_checkpoint, load_model
from nnunet_ray.runs.options_file import apply_options_file
from nnunet_ray.training.loop import fit
from nnunet_ray.training.steps import build_optimizer

# nnU-Net v2's nnUNetTrainer (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py), checked by hand.
NNUNETV2 = {"optimizer": "sgd", "learning_rate": 1e-2, "weight_decay": 3e-5, "momentum": 0.99, "nesterov": True,
            "scheduler": "poly", "train_batches": 250, "max_epochs": 1000, "patience": 1000, "gradient_clip_val": 12.0,
            "deep_supervision": True, "deep_supervision_scheme": "nnunetv2"}


def _train(*words: str) -> TrainConfig:
    return _config_from(TrainConfig, build_parser().parse_args(["train", "--data", "d", "--results", "r", *words]))


def _values(cfg: TrainConfig) -> dict:
    return {name: getattr(cfg, name) for name in NNUNETV2}


def test_dle_is_the_options_own_defaults():
    assert set(RECIPES["nnunetv2"]) == set(RECIPES["dle"]) == set(NNUNETV2)  # a switch resets every option
    defaults = TrainConfig()
    assert RECIPES["dle"] == {name: getattr(defaults, name) for name in RECIPES["dle"]}
    assert dataclasses.replace(_train(), explicit=()) == TrainConfig(data="d", results="r")


def test_nnunetv2_resolves_to_nnunet_v2s_trainer():
    cfg = _train("--recipe", "nnunetv2")
    assert _values(cfg) == NNUNETV2
    assert cfg.explicit == ("data", "recipe", "results")


@pytest.mark.parametrize("words, changed", [
    (["--learning-rate", "3e-3"], {"learning_rate": 3e-3}),
    (["--learning-rate", "1e-3"], {"learning_rate": 1e-3}),  # dle's value, but given: it wins
    (["--no-deep-supervision", "--max-epochs", "10000"], {"deep_supervision": False, "max_epochs": 10000}),
    (["--optimizer", "adam"], {"optimizer": "adam"}),
])
def test_a_flag_given_wins_over_the_recipe(words, changed):
    cfg = _train("--recipe", "nnunetv2", *words)
    assert _values(cfg) == {**NNUNETV2, **changed}
    assert set(changed) <= set(cfg.explicit)


def test_dle_sgd_has_the_references_no_weight_decay_unless_given():
    assert _train("--optimizer", "sgd").weight_decay == 0.0
    assert _train("--optimizer", "sgd", "--weight-decay", "1e-4").weight_decay == 1e-4
    assert _train("--optimizer", "adam").weight_decay == 1e-4


def test_cv_and_tune_resolve_their_training_options():
    parser = build_parser()
    tune = _config_from(TuneConfig, parser.parse_args(["tune", "--data", "d", "--results", "r", "--recipe",
                                                       "nnunetv2", "--max-epochs", "5"]))
    assert _values(tune.train) == {**NNUNETV2, "max_epochs": 5} and tune.train.explicit == ("max_epochs", "recipe")
    cv = _config_from(CVConfig, parser.parse_args(["cv", "--data", "d", "--results", "r", "--recipe", "nnunetv2"]))
    assert _values(cv.train) == NNUNETV2


def test_moving_to_another_recipe_keeps_what_the_user_chose():
    v2 = _train("--recipe", "nnunetv2", "--learning-rate", "3e-3")
    dle = with_options(v2, recipe="dle")
    assert dle.learning_rate == 3e-3 and dle.optimizer == "radam" and dle.scheduler == "none"
    assert not dle.deep_supervision and dle.weight_decay == 1e-4 and dle.max_epochs == 10000
    assert with_options(dle, recipe="nnunetv2") == dataclasses.replace(v2, explicit=dle.explicit)
    assert with_options(v2) == v2  # resolving a resolved config changes nothing


def test_a_config_built_in_python_keeps_its_own_values():
    cfg = TrainConfig(recipe="nnunetv2", learning_rate=3e-3, max_epochs=2)
    assert chosen_options(cfg) == {"recipe", "learning_rate", "max_epochs"}
    resolved = with_options(cfg)
    assert _values(resolved) == {**NNUNETV2, "learning_rate": 3e-3, "max_epochs": 2}


def test_config_file_with_a_recipe_fills_the_options_nobody_chose(tmp_path):
    (tmp_path / "best.json").write_text(json.dumps({"recipe": "nnunetv2", "learning_rate": 0.02}))
    cfg = apply_options_file(_train("--max-epochs", "70"), str(tmp_path / "best.json"))
    assert _values(cfg) == {**NNUNETV2, "learning_rate": 0.02, "max_epochs": 70}
    mine = apply_options_file(_train("--recipe", "dle", "--learning-rate", "1e-3"), str(tmp_path / "best.json"))
    assert (mine.recipe, mine.learning_rate, mine.optimizer) == ("dle", 1e-3, "radam")  # the flags win
    (tmp_path / "bad.json").write_text(json.dumps({"recipe": "nnunetv3"}))
    with pytest.raises(ConfigError, match="^--recipe: 'nnunetv3' is not one of dle, nnunetv2"):
        apply_options_file(TrainConfig(), str(tmp_path / "bad.json"))


def test_nesterov_needs_momentum():
    with pytest.raises(ConfigError, match="^--nesterov: needs --momentum > 0"):
        apply_recipe(TrainConfig(data="d", results="r", recipe="nnunetv2", momentum=0.0), {"momentum"}).validate()


def test_a_run_records_the_resolved_recipe_in_its_config_json(tiny_task_2d, tmp_path):
    """A tiny real 2D run with --recipe nnunetv2: the checkpoint's config.json holds the recipe and its resolved values
    (the explicit flag's value kept), and the optimizer and deep-supervision heads are v2's."""
    cfg = _config_from(TrainConfig, build_parser().parse_args([
        "train", "--data", str(tiny_task_2d), "--results", str(tmp_path), "--dim", "2", "--recipe", "nnunetv2",
        "--learning-rate", "3e-3", "--max-epochs", "1", "--min-epochs", "1", "--batch-size", "2", "--warmup", "0",
        "--image-every", "0"]))
    plans = load_plans(tiny_task_2d)
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(2, plans.in_channels, *plans.patch_size, generator=g) for _ in range(2)]
    batches = [{"image": x, "label": (x[:, :1] > 0.5).to(torch.uint8)} for x in images]
    val = eval_loader(tiny_task_2d, load_splits(tiny_task_2d)[0]["val"][:1])
    keeper = LocalCheckpoints(tmp_path / "ckpt")
    fit(cfg, plans, train_data=batches, val_data=val, steps_per_epoch=2, device=torch.device("cpu"), report=keeper)
    saved = json.loads((keeper.last / "config.json").read_text())
    assert saved["recipe"] == "nnunetv2"
    assert {k: saved[k] for k in NNUNETV2} == {**NNUNETV2, "learning_rate": 3e-3, "max_epochs": 1}
    assert set(saved["explicit"]) >= {"recipe", "learning_rate", "max_epochs"} and "optimizer" not in saved["explicit"]
    group = load_checkpoint(keeper.last)["optimizer"]["param_groups"][0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"]) == (True, 0.99, 3e-5)
    model, _, _ = load_model(keeper.last)  # strict load: the heads match the recorded scheme
    assert model.aux_levels == [1] and model.deep_supervision_weights == pytest.approx([2 / 3, 1 / 3])


def test_poly_is_stepped_per_epoch_every_iteration_of_an_epoch_at_its_rate(tiny_task_2d, tmp_path, monkeypatch):
    """Per iteration, hand-checked: a real 3-epoch, 2-step run with --scheduler poly (T = 3, no warm-up) takes every
    optimizer step of epoch e at 1e-2 * (1 - e/3)^0.9: 1e-2, then 1e-2 * (2/3)^0.9 = 6.943e-3, then
    1e-2 * (1/3)^0.9 = 3.720e-3."""
    from nnunet_ray.training import loop

    rates: list[float] = []

    def recording(params, cfg):
        optimizer = build_optimizer(params, cfg)
        step = optimizer.step
        optimizer.step = lambda *a, **k: (rates.append(optimizer.param_groups[0]["lr"]), step(*a, **k))[1]
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", recording)
    cfg = TrainConfig(data=str(tiny_task_2d), results=str(tmp_path), dim=2, scheduler="poly", learning_rate=1e-2,
                      warmup=0, max_epochs=3, min_epochs=3, batch_size=2, image_every=0, amp=False).validate()
    plans = load_plans(tiny_task_2d)
    g = torch.Generator().manual_seed(0)
    batches = [{"image": x, "label": (x[:, :1] > 0.5).to(torch.uint8)}
               for x in (torch.randn(2, plans.in_channels, *plans.patch_size, generator=g) for _ in range(2))]
    val = eval_loader(tiny_task_2d, load_splits(tiny_task_2d)[0]["val"][:1])
    fit(cfg, plans, train_data=batches, val_data=val, steps_per_epoch=2, device=torch.device("cpu"))
    expected = [1e-2, 1e-2, 6.943e-3, 6.943e-3, 3.720e-3, 3.720e-3]
    assert rates == pytest.approx(expected, rel=1e-3)
