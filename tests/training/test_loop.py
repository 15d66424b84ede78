"""The training loop without Ray: early stopping, exact resume, logs and checkpoints, AMP, 2D, benchmark."""

import dataclasses
import json
import logging
import math
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnunet_ray.config import ConfigError, TrainConfig, apply_recipe
from nnunet_ray.data.folds import load_splits
from nnunet_ray.loading.fold_data import fold_loaders
from nnunet_ray.loading.iterators import eval_loader
from nnunet_ray.loading.pipelines import train_loader
from nnunet_ray.planning.schema import load_plans
from nnunet_ray.runs.checkpoint import LocalCheckpoints, load_checkpoint, load_model
from nnunet_ray.training import loop
from nnunet_ray.training.benchmark import benchmark
from nnunet_ray.training.logs import METRICS_FILE, TB_DIR, read_metrics
from nnunet_ray.training.loop import EarlyStopping, fit, setup
from nnunet_ray.training.schedules import LRSchedule
from nnunet_ray.training.steps import amp_dtype, build_optimizer, make_scaler, train_step

CPU = torch.device("cpu")


def _cfg(data, **overrides):
    base = dict(data=str(data), results="unused", min_epochs=1, max_epochs=2, batch_size=2, warmup=0,
                image_every=1)
    return TrainConfig(**{**base, **overrides}).validate()


def _fixed_batches(plans, n=2, seed=0):
    """Deterministic training batches (the same every epoch), so two runs can be compared bit for bit."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, plans.in_channels, *plans.patch_size)
    image = torch.randn(n, *shape, generator=g)
    return [{"image": x, "label": (x[:, :1] > 0.5).to(torch.uint8) + (x[:, :1] > 1.5).to(torch.uint8)}
            for x in image]


class Recorder:
    """``report`` callback that keeps the metrics and the best/last checkpoints like a real run."""

    def __init__(self, root):
        self.records, self.keeper = [], LocalCheckpoints(root)

    def __call__(self, metrics, checkpoint_dir):
        self.records.append(metrics)
        self.keeper(metrics, checkpoint_dir)


def _fit(cfg, data, recorder, train_data, **kwargs):
    plans = load_plans(data)
    val = eval_loader(data, load_splits(data)[0]["val"])
    return fit(cfg, plans, train_data=train_data, val_data=val, steps_per_epoch=len(train_data), device=CPU,
               report=recorder, **kwargs)


@pytest.mark.parametrize("scores, min_epochs, stop_after", [
    ([0.5, 0.5, 0.5, 0.5], 1, 2),  # patience 2: two validations without improvement
    ([0.5, 0.6, 0.6, 0.7, 0.7, 0.7], 1, 5),
    ([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 5, 4),  # never before min_epochs
    ([0.1, 0.2, 0.3, 0.4], 1, None),
])
def test_early_stopping_rule(scores, min_epochs, stop_after):
    early = EarlyStopping(patience=2, min_epochs=min_epochs)
    stopped_at = None
    for epoch, score in enumerate(scores):
        early.update(epoch, score)
        if early.should_stop(epoch):
            stopped_at = epoch
            break
    assert stopped_at == stop_after


def test_frozen_metric_stops_training_early(tiny_task_3d, tmp_path, monkeypatch):
    frozen = {"dice_mean": 0.4, "dice": [0.4, 0.4, 0.4], "val_loss": 1.0, "val_cases": 2, "overlay": None}
    monkeypatch.setattr(loop, "validate", lambda *a, **k: dict(frozen))
    cfg = _cfg(tiny_task_3d, patience=2, min_epochs=1, max_epochs=10)
    recorder = Recorder(tmp_path / "ckpt")
    out = _fit(cfg, tiny_task_3d, recorder, _fixed_batches(load_plans(tiny_task_3d)), log_dir=tmp_path)
    assert [r["epoch"] for r in recorder.records] == [0, 1, 2]
    assert out["stopped_early"] and out["epochs"] == 3 and out["best_epoch"] == 0
    assert [r["stopped_early"] for r in recorder.records] == [False, False, True]
    # Tied Dice: only the first epoch that reached it is the checkpoint Ray ranks best (Ray prefers later on ties).
    assert [r[loop.CHECKPOINT_SCORE] for r in recorder.records] == [0.4, -1.0, -1.0]
    assert len(read_metrics(tmp_path / METRICS_FILE)) == 3
    # Resuming the stopped run with the same patience trains no further.
    resumed = _fit(cfg, tiny_task_3d, recorder, _fixed_batches(load_plans(tiny_task_3d)),
                   resume=load_checkpoint(recorder.keeper.last))
    assert resumed["epochs"] == 3 and resumed["stopped_early"] and len(recorder.records) == 3


def test_resume_continues_at_next_epoch_with_the_same_state(tiny_task_3d, tmp_path):
    plans = load_plans(tiny_task_3d)
    cfg3 = _cfg(tiny_task_3d, max_epochs=3, scheduler="plateau", lr_patience=0, factor=0.5)
    straight = Recorder(tmp_path / "straight")
    _fit(cfg3, tiny_task_3d, straight, _fixed_batches(plans))
    interrupted = Recorder(tmp_path / "interrupted")
    _fit(_cfg(tiny_task_3d, max_epochs=2, scheduler="plateau", lr_patience=0, factor=0.5), tiny_task_3d,
         interrupted, _fixed_batches(plans))
    state = load_checkpoint(interrupted.keeper.last)
    assert state["progress"]["epoch"] == 1
    restored = setup(cfg3, plans, device=CPU, resume=state)
    saved_opt = state["optimizer"]["state"]
    for index, values in restored.optimizer.state_dict()["state"].items():
        assert torch.equal(values["exp_avg"], saved_opt[index]["exp_avg"])
        assert int(values["step"]) == int(saved_opt[index]["step"]) == 2 * 2  # 2 epochs x 2 steps
    out = _fit(cfg3, tiny_task_3d, interrupted, _fixed_batches(plans), resume=state)
    assert out["start_epoch"] == 2 and out["epochs"] == 3
    assert [r["epoch"] for r in interrupted.records] == [0, 1, 2]
    # Same batches every epoch and the full state restored: the resumed run ends exactly where the straight one does.
    assert interrupted.records[2]["lr"] == straight.records[2]["lr"]
    assert interrupted.records[2]["train_loss"] == straight.records[2]["train_loss"]
    a, _, _ = load_model(straight.keeper.last)
    b, _, _ = load_model(interrupted.keeper.last)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_2d_run_with_amp_tta_deep_supervision_writes_logs_and_checkpoints(tiny_task_2d, tmp_path):
    plans = load_plans(tiny_task_2d)
    split = load_splits(tiny_task_2d)[0]
    cfg = _cfg(tiny_task_2d, dim=2, amp=True, tta=True, deep_supervision=True, skip_first_n_eval=1,
               gradient_clip_val=1.0, batch_size=4, nvol=2, image_every=1)
    loader = train_loader(tiny_task_2d, split["train"], plans, batch_size=4, nvol=2, seed=0, num_threads=1)
    recorder = Recorder(tmp_path / "ckpt")
    out = _fit(cfg, tiny_task_2d, recorder, loader, log_dir=tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert lines[0]["dice_mean"] is None and lines[0]["val_loss"] is None  # validation skipped
    assert 0.0 <= lines[1]["dice_mean"] <= 1.0 and len(lines[1]["dice"]) == plans.n_classes - 1
    assert lines[1]["val_cases"] == len(split["val"]) and math.isfinite(lines[1]["val_loss"])
    assert out["best_epoch"] == 1 and out["best_dice"] == pytest.approx(lines[1]["dice_mean"])
    assert load_checkpoint(recorder.keeper.best)["progress"]["epoch"] == 1
    acc = EventAccumulator(str(tmp_path / "run" / TB_DIR))
    acc.Reload()
    assert {"train/loss", "val/dice_mean", "val/dice_organ", "train/lr"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Images("val/overlay")] == [1]


def test_benchmark_writes_perf_json(tiny_task_3d, tmp_path, caplog):
    cfg = _cfg(tiny_task_3d, warmup=1, train_batches=4)
    with caplog.at_level(logging.INFO, logger="nnunet_ray.training.benchmark"):
        perf = benchmark(cfg, load_plans(tiny_task_3d), train_data=_fixed_batches(load_plans(tiny_task_3d)),
                         device=CPU, out_dir=tmp_path)
    assert json.loads((tmp_path / "perf.json").read_text()) == perf
    assert perf["timed_steps"] == 4 and perf["warmup_steps"] == 1 and perf["global_batch"] == 2
    assert perf["throughput_train"] == pytest.approx(2 / (perf["latency_train_mean"] / 1000))
    assert perf["latency_train_mean"] > 0 and perf["latency_train_99"] >= perf["latency_train_90"]
    assert '"throughput_train"' in caplog.text  # logged, not printed: the caller decides what reaches a terminal


@pytest.mark.parametrize("options, kind, lr, decay, momentum, nesterov", [
    ({"optimizer": "radam"}, torch.optim.RAdam, 1e-3, 1e-4, None, None),
    ({"optimizer": "adam"}, torch.optim.AdamW, 1e-3, 1e-4, None, None),  # decoupled, as apex FusedAdam's adam_w_mode
    ({"optimizer": "sgd"}, torch.optim.SGD, 1e-3, 0.0, 0.99, False),  # the reference's SGD has no weight decay
    ({"optimizer": "sgd", "weight_decay": 1e-4}, torch.optim.SGD, 1e-3, 1e-4, 0.99, False),  # unless it is given
    ({"recipe": "nnunetv2"}, torch.optim.SGD, 1e-2, 3e-5, 0.99, True),  # nnU-Net v2's nnUNetTrainer
])
def test_optimizers(options, kind, lr, decay, momentum, nesterov):
    cfg = apply_recipe(TrainConfig(**options), given=options)  # as the CLI builds it from these flags
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    group = opt.param_groups[0]
    assert type(opt) is kind and group["lr"] == lr and group["weight_decay"] == decay
    assert momentum is None or (group["momentum"], group["nesterov"]) == (momentum, nesterov)


def test_amp_settings_on_cpu():
    assert amp_dtype(TrainConfig(amp=False), CPU) is None
    assert amp_dtype(TrainConfig(amp=True), CPU) is torch.bfloat16  # CPUs: bf16 autocast
    assert not make_scaler(torch.bfloat16, CPU).is_enabled()


def test_gradient_clipping_bounds_the_update():
    net = torch.nn.Conv3d(1, 2, 1)
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    batch = {"image": torch.randn(2, 1, 4, 4, 4) * 100, "label": torch.ones(2, 1, 4, 4, 4, dtype=torch.uint8)}
    loss_fn = lambda logits, label: torch.nn.functional.cross_entropy(logits, label[:, 0].long())  # noqa: E731
    train_step(net, batch, loss_fn=loss_fn, optimizer=opt, scaler=make_scaler(None, CPU), dtype=None, device=CPU,
               clip=1e-3)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-3)


def test_default_learning_rate_is_constant_like_the_reference():
    schedule = LRSchedule.from_config(TrainConfig())
    assert [schedule.lr(e) for e in range(3)] == [1e-3, 1e-3, 1e-3]


def test_radam_weight_decay_is_decoupled_as_torch_optimizer():
    # With zero gradients RAdam's moments stay 0, so decoupled decay (torch_optimizer.RAdam, the reference's) is
    # exactly p *= (1 - lr * wd) per step. Coupled L2 would feed wd * p into the moments: step 1 is the same, step 2
    # gives 0.9013 instead of 0.9025 for these values.
    param = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([param], TrainConfig(optimizer="radam", learning_rate=0.1, weight_decay=0.5))
    for _ in range(3):
        param.grad = torch.zeros(3)
        opt.step()
    assert param.detach().tolist() == pytest.approx([(1 - 0.1 * 0.5) ** 3] * 3, rel=1e-6)


class EpochRecorder(Recorder):
    """Also notes which epochs came with a checkpoint."""

    def __init__(self, root):
        super().__init__(root)
        self.checkpointed = []

    def __call__(self, metrics, checkpoint_dir):
        super().__call__(metrics, checkpoint_dir)
        if checkpoint_dir is not None:
            self.checkpointed.append(metrics["epoch"])


def _scripted_validation(monkeypatch, scores):
    """Replace validation by a script of Dice scores, one per call; returns the list of calls made."""
    calls = []

    def fake(*args, **kwargs):
        calls.append(len(calls))
        score = scores[len(calls) - 1]
        return {"dice_mean": score, "dice": [score] * 3, "val_loss": 1.0, "val_cases": 2, "overlay": None}

    monkeypatch.setattr(loop, "validate", fake)
    return calls


def test_val_every_counts_patience_in_validations_and_checkpoint_every_keeps_the_best(
        tiny_task_3d, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.5, 0.4, 0.4])
    cfg = _cfg(tiny_task_3d, val_every=2, checkpoint_every=3, patience=2, min_epochs=1, max_epochs=20)
    recorder = EpochRecorder(tmp_path / "ckpt")
    out = _fit(cfg, tiny_task_3d, recorder, _fixed_batches(load_plans(tiny_task_3d)))
    validated = [r["epoch"] for r in recorder.records if not math.isnan(r["dice_mean"])]
    assert validated == [1, 3, 5]  # every 2nd epoch
    # Patience 2 counts validations: epochs 3 and 5 did not improve -> stop after 5 (epochs would stop after 3).
    assert out["stopped_early"] and out["stop_reason"] == "early_stopping" and out["epochs"] == 6
    # Every 3rd epoch (2), the new best (1) and the last (5); epochs 0, 3, 4 write none.
    assert recorder.checkpointed == [1, 2, 5]
    assert load_checkpoint(recorder.keeper.best)["progress"]["epoch"] == 1


def test_last_epoch_is_always_validated_and_checkpointed(tiny_task_3d, tmp_path, monkeypatch):
    calls = _scripted_validation(monkeypatch, [0.5, 0.6])
    cfg = _cfg(tiny_task_3d, val_every=3, checkpoint_every=10, max_epochs=4)
    recorder = EpochRecorder(tmp_path / "ckpt")
    out = _fit(cfg, tiny_task_3d, recorder, _fixed_batches(load_plans(tiny_task_3d)))
    assert len(calls) == 2 and out["stop_reason"] == "max_epochs" and out["best_epoch"] == 3
    assert recorder.checkpointed == [2, 3]  # both new bests; 3 is also the last


def test_max_time_stops_validates_and_keeps_the_best(tiny_task_3d, tmp_path, monkeypatch, capsys):
    _scripted_validation(monkeypatch, [0.5] * 100)
    cfg = _cfg(tiny_task_3d, max_time="00:00:01", val_every=50, checkpoint_every=50, max_epochs=100)
    recorder = EpochRecorder(tmp_path / "ckpt")
    hook = lambda epoch: epoch == 1 and time.sleep(1.1)  # noqa: E731 - the budget surely runs out in epoch 1
    out = _fit(cfg, tiny_task_3d, recorder, _fixed_batches(load_plans(tiny_task_3d)), epoch_hook=hook,
               log_dir=tmp_path / "run")
    last = recorder.records[-1]
    assert out["stop_reason"] == "max_time" and not out["stopped_early"] and out["epochs"] <= 2
    assert last["stop_reason"] == "max_time" and last["dice_mean"] == 0.5  # the stopping epoch was validated
    assert recorder.checkpointed == [last["epoch"]]
    assert load_checkpoint(recorder.keeper.best)["progress"]["epoch"] == last["epoch"]
    assert f"stopped after epoch {last['epoch']}: --max-time reached" in capsys.readouterr().out


@pytest.mark.parametrize("value, match", [
    ("10", "'10' is not HH:MM:SS"), ("1:60:00", "is not HH:MM:SS"), ("00:00:00", "longer than 00:00:00"),
])
def test_max_time_must_be_hh_mm_ss(value, match):
    with pytest.raises(ConfigError, match=f"--max-time: .*{match}"):
        TrainConfig(data="d", results="r", max_time=value).validate()
    assert TrainConfig(data="d", results="r", max_time="26:00:30").validate().max_seconds == 26 * 3600 + 30


def test_train_batches_is_the_epoch_length_beyond_one_pass(tiny_task_3d, tmp_path):
    # The DALI stream is endless: --train-batches sets the steps of an epoch even past one pass over the cases.
    cfg = _cfg(tiny_task_3d, max_epochs=1, train_batches=7, dali_threads=1)
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    assert "epoch length" in help_text["train_batches"]
    plans = load_plans(tiny_task_3d)
    loader, val_data = fold_loaders(cfg, plans, device=CPU)
    assert len(loader) < 7  # one pass is fewer steps
    recorder = Recorder(tmp_path / "ckpt")
    fit(cfg, plans, train_data=loader, val_data=val_data, steps_per_epoch=cfg.train_batches or len(loader),
        device=CPU, report=recorder)
    steps = {int(s["step"]) for s in load_checkpoint(recorder.keeper.last)["optimizer"]["state"].values()}
    assert steps == {7}
