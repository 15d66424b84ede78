"""LR schedules: hand-checked values, and agreement with torch's own schedulers."""

import math

import pytest
import torch

from nnunet_ray.config import TrainConfig
from nnunet_ray.training.schedules import LRSchedule, decay_factor, set_lr, time_horizon, warmup_factor


@pytest.mark.parametrize("epoch, warmup, expected", [
    (0, 5, 0.2), (1, 5, 0.4), (4, 5, 1.0), (50, 5, 1.0), (0, 0, 1.0), (0, 1, 1.0),
])
def test_warmup_factor(epoch, warmup, expected):
    assert warmup_factor(epoch, warmup) == pytest.approx(expected)


@pytest.mark.parametrize("scheduler, epoch, expected", [
    ("none", 7, 1.0),
    ("plateau", 7, 1.0),
    ("multistep", 0, 1.0), ("multistep", 1, 1.0), ("multistep", 2, 0.3), ("multistep", 3, 0.3),
    ("multistep", 4, 0.09), ("multistep", 100, 0.09),
    ("cosine", 0, 1.0), ("cosine", 1, 0.5 * (1 + math.cos(math.pi / 4))), ("cosine", 2, 0.5), ("cosine", 4, 0.0),
    ("cosine", 9, 0.0),
])
def test_decay_factor(scheduler, epoch, expected):
    got = decay_factor(epoch, scheduler=scheduler, steps=(2, 4), factor=0.3, max_epochs=4)
    assert got == pytest.approx(expected, abs=1e-12)


def test_unknown_scheduler_is_rejected():
    with pytest.raises(ValueError, match="scheduler"):
        LRSchedule(1e-3, scheduler="exponential")


def test_warmup_times_multistep_by_hand():
    schedule = LRSchedule(1e-3, scheduler="multistep", steps=(1,), factor=0.5, warmup=2)
    assert [schedule.lr(e) for e in range(3)] == pytest.approx([0.5e-3 * 1.0, 1e-3 * 0.5, 1e-3 * 0.5])


def _torch_lrs(make_scheduler, epochs, losses=None):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler(opt)
    lrs = []
    for e in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(losses[e]) if losses else sched.step()
    return lrs


@pytest.mark.parametrize("scheduler, make", [
    ("multistep", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 7], gamma=0.3)),
    ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12)),
    ("poly", lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=12, power=0.9)),
])
def test_epoch_schedules_match_torch(scheduler, make):
    ours = LRSchedule(1e-3, scheduler=scheduler, steps=(3, 7), factor=0.3, max_epochs=12)
    assert [ours.lr(e) for e in range(12)] == pytest.approx(_torch_lrs(make, 12), rel=1e-9, abs=1e-15)


def test_plateau_by_hand_and_against_torch():
    losses = [1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.49999]
    ours = LRSchedule(1e-3, scheduler="plateau", factor=0.5, lr_patience=1)
    lrs = []
    for loss in losses:
        lrs.append(ours.lr(0))
        ours.observe(loss)
    # Reductions after the 3rd loss (2 bad epochs > patience 1), the 6th and the 8th (0.5 is the best since).
    assert lrs == pytest.approx([1e-3] * 3 + [5e-4] * 3 + [2.5e-4] * 2 + [1.25e-4])
    torch_lrs = _torch_lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1),
                           len(losses), losses)
    assert lrs == pytest.approx(torch_lrs)


def test_plateau_state_round_trip():
    a = LRSchedule(1.0, scheduler="plateau", factor=0.5, lr_patience=0)
    for loss in (1.0, 2.0, 2.0):
        a.observe(loss)
    b = LRSchedule(1.0, scheduler="plateau", factor=0.5, lr_patience=0)
    b.load_state_dict(a.state_dict())
    assert b.lr(0) == a.lr(0) == 0.25
    assert b.state_dict() == a.state_dict()


def test_observe_is_ignored_without_plateau():
    schedule = LRSchedule(1.0, scheduler="none", lr_patience=0)
    for _ in range(5):
        schedule.observe(1.0)
    assert schedule.lr(0) == 1.0


def test_from_config_and_set_lr():
    cfg = TrainConfig(learning_rate=2e-3, scheduler="multistep", lr_milestones=(1,), factor=0.1, warmup=0)
    schedule = LRSchedule.from_config(cfg)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    set_lr(opt, schedule.lr(1))
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)


@pytest.mark.parametrize("epoch, expected", [(0, 1.0), (5, 0.5 ** 0.9), (9, 0.1 ** 0.9), (25, 0.1 ** 0.9)])
def test_poly_by_hand(epoch, expected):
    # nnU-Net v2's (1 - epoch / T) ** 0.9 with T = 10; past the horizon it stays at the last epoch's rate.
    assert decay_factor(epoch, scheduler="poly", max_epochs=10) == pytest.approx(expected, rel=1e-12)


def test_time_horizon_by_hand():
    assert time_horizon(0, remaining=100.0, epoch_seconds=[], max_epochs=1000) == 1000  # nothing measured yet
    assert time_horizon(3, remaining=70.0, epoch_seconds=[10.0, 10.0, 10.0], max_epochs=1000) == 10  # 3 + 7
    assert time_horizon(3, remaining=70.0, epoch_seconds=[10.0] * 3, max_epochs=8) == 8  # --max-epochs caps it
    assert time_horizon(9, remaining=4.0, epoch_seconds=[10.0] * 9, max_epochs=1000) == 10  # this epoch at least


@pytest.mark.parametrize("scheduler", ["poly", "cosine"])
def test_a_time_budget_ends_the_decay_at_the_last_epoch(scheduler):
    """A fake clock: a 100 s budget, epochs of 7 s (the first 9 s: start-up), checked after each epoch as the loop
    does. The run trains epochs 0-13; its last epoch runs at the schedule's last rate for the 14 epochs the budget
    held, not at the barely decayed rate of a 10,000-epoch horizon."""
    schedule = LRSchedule(1.0, scheduler=scheduler, max_epochs=10000)
    budget, clock, measured, lrs = 100.0, 0.0, [], []
    for epoch in range(10000):
        horizon = time_horizon(epoch, remaining=budget - clock, epoch_seconds=measured, max_epochs=10000)
        lrs.append(schedule.lr(epoch, horizon=horizon))
        measured.append(9.0 if epoch == 0 else 7.0)
        clock += measured[-1]
        if clock >= budget:
            break
    last = len(lrs) - 1
    assert last == 13 and lrs[0] == 1.0 and all(a >= b for a, b in zip(lrs, lrs[1:]))
    floor = decay_factor(last, scheduler=scheduler, max_epochs=last + 1)  # the rate at the end of a 14-epoch run
    one_epoch = decay_factor(last - 1, scheduler=scheduler, max_epochs=last + 1) - floor
    assert lrs[-1] <= floor + one_epoch
    assert lrs[-1] < 0.1 * decay_factor(last, scheduler=scheduler, max_epochs=10000)
