"""What `tune` sweeps with no search flag (the learning rate, over the optimizer's range), a recipe as a sweep
dimension, and the --budget stopper on a fake clock; no trial runs here (tests/distributed/test_sweep.py runs them)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from types import SimpleNamespace

import pytest

from nnunet_ray.cli import _config_from, build_parser
from nnunet_ray.config import ConfigError, TrainConfig, TuneConfig
from nnunet_ray.data.records import RecordError
from nnunet_ray.distributed.budget import BUDGET_FILE, BudgetRecord, SweepBudget, read_budget_record
from nnunet_ray.distributed.experiment import validate_trials
from nnunet_ray.distributed.search_space import candidates, load_space_file, search_space
from nnunet_ray.distributed.sweep import planned_trials
from nnunet_ray.distributed.trial_spec import TrialSpec, check_resume_options, trial_config, trial_name
from tests.training.conftest import build_tiny_task


def _tune(*words: str) -> TuneConfig:
    return _config_from(TuneConfig, build_parser().parse_args(["tune", "--data", "d", "--results", "r", *words]))


@pytest.mark.parametrize("words, low_high", [
    ([], [1e-4, 1e-2]),  # dle: RAdam
    (["--optimizer", "adam"], [1e-4, 1e-2]),
    (["--recipe", "nnunetv2"], [1e-3, 1e-1]),  # SGD
    (["--optimizer", "sgd"], [1e-3, 1e-1]),
])
def test_no_search_flag_sweeps_the_learning_rate_over_the_optimizers_range(words, low_high):
    assert search_space(_tune(*words)) == {"learning_rate": ("loguniform", low_high)}


def test_a_search_flag_replaces_the_default_sweep():
    assert search_space(_tune("--patch-size", "16,16,16")) == {"patch_size": ("choice", [(16, 16, 16)])}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_tiny_task(tmp_path_factory.mktemp("recipe_sweep"), cases=6, folds=3)


def test_a_recipe_grid_resolves_each_trials_options(task, tmp_path):
    """recipe: {grid: [dle, nnunetv2]} with --max-epochs 5 and a swept learning rate: each trial takes its recipe's
    values for the options nobody chose, keeps the flag's and the drawn ones."""
    (tmp_path / "space.yaml").write_text("recipe: {grid: [dle, nnunetv2]}\n")
    space = load_space_file(str(tmp_path / "space.yaml"))
    assert space == {"recipe": ("grid", ["dle", "nnunetv2"])}
    base = dataclasses.replace(_tune("--max-epochs", "5", "--min-epochs", "1").train, results=str(tmp_path))
    spec = TrialSpec(base=base, data_dirs={3: str(task)}, dims=(3,), folds=(0,))
    validate_trials(spec, candidates(space))  # both recipes' trials are valid on the data
    trials = {r: trial_config({"dim": 3, "fold": 0, "sweep": {"recipe": r, "learning_rate": 0.004}}, spec)
              for r in ("dle", "nnunetv2")}
    dle, v2 = trials["dle"], trials["nnunetv2"]
    assert (dle.optimizer, dle.scheduler, dle.deep_supervision, dle.train_batches) == ("radam", "none", False, 0)
    assert (v2.optimizer, v2.nesterov, v2.scheduler, v2.deep_supervision_scheme, v2.train_batches, v2.weight_decay) \
        == ("sgd", True, "poly", "nnunetv2", 250, 3e-5)
    assert dle.learning_rate == v2.learning_rate == 0.004 and dle.max_epochs == v2.max_epochs == 5
    assert {"recipe", "learning_rate", "max_epochs"} <= set(v2.explicit)
    trial = SimpleNamespace(config={"dim": 3, "fold": 0, "sweep": {"recipe": "nnunetv2"}}, trial_id="abc")
    assert trial_name(trial) == "3d_fold0_nnunetv2_abc"


def test_planned_trials_count_samples_grids_and_folds():
    space = {"learning_rate": ("loguniform", [1e-4, 1e-2]), "recipe": ("grid", ["dle", "nnunetv2"]),
             "batch_size": ("grid", [2, 4, 8])}
    assert planned_trials(space, num_samples=4, n_folds=2) == 4 * 2 * 3 * 2
    assert planned_trials({"learning_rate": ("loguniform", [1e-4, 1e-2])}, num_samples=4, n_folds=1) == 4


def test_budget_stops_all_after_its_seconds_and_records_what_it_stopped(tmp_path):
    now = [100.0]
    budget = SweepBudget(30.0, str(tmp_path), clock=lambda: now[0])
    trials = [SimpleNamespace(status=s, path=f"/x/sweep/t{i}") for i, s in enumerate(
        ["TERMINATED", "RUNNING", "PENDING", "PENDING"])]
    budget.on_step_begin(0, trials)
    assert not budget.stop_all()  # the clock starts at Tune's first step
    now[0] = 129.9
    assert not budget.stop_all() and read_budget_record(str(tmp_path)) is None
    now[0] = 130.0
    assert budget.stop_all() and budget.stop_all()  # and stays reached
    assert budget("t1", {}) is False  # never one trial alone
    assert json.loads((tmp_path / BUDGET_FILE).read_text()) == {"budget_s": 30.0, "stopped_running": ["t1"],
                                                                 "not_started": ["t2", "t3"], "version": 1}
    assert read_budget_record(str(tmp_path)) == BudgetRecord(30.0, ("t1",), ("t2", "t3"))
    # tuner.pkl holds it; a restored experiment (--resume) gets the whole budget again from its first step.
    restored = pickle.loads(pickle.dumps(SweepBudget(30.0, str(tmp_path))))  # the real clock pickles
    assert restored.seconds == 30.0 and not restored.reached
    state = budget.__getstate__()
    assert (state["_started"], state["reached"], state["_trials"]) == (None, False, [])


@pytest.mark.parametrize("value", ["10", "00:00:00", "1:60:00"])
def test_budget_must_be_hh_mm_ss(value):
    with pytest.raises(ConfigError, match="^--budget: "):
        _tune("--budget", value)


def test_resume_refuses_another_budget():
    spec = TrialSpec(base=TrainConfig(), data_dirs={3: "d"}, dims=(3,), folds=(0,), budget="00:10:00")
    check_resume_options(_tune("--budget", "00:10:00"), spec)
    check_resume_options(_tune(), spec)  # not given: the experiment's own
    with pytest.raises(ConfigError, match=r"^--resume: .*--budget 00:20:00 \(the experiment's: 00:10:00\)"):
        check_resume_options(_tune("--budget", "00:20:00"), spec)
    assert TrialSpec.from_json(spec.to_json()).budget == "00:10:00"


def test_experiment_json_is_versioned_and_a_newer_or_broken_one_is_refused_naming_it():
    spec = TrialSpec(base=TrainConfig(learning_rate=3e-3), data_dirs={3: "/pre/T/3d"}, dims=(3,), folds=(0, 1))
    written = spec.to_json()
    assert written["version"] == 1
    assert TrialSpec.from_json(json.loads(json.dumps(written))) == spec
    assert TrialSpec.from_json({k: v for k, v in written.items() if k != "version"}) == spec  # an older file
    with pytest.raises(RecordError, match="^R/x/experiment.json: version 2 is newer"):
        TrialSpec.from_json({**written, "version": 2}, source="R/x/experiment.json")
    with pytest.raises(RecordError, match="^R/x/experiment.json: not an experiment spec \\(KeyError"):
        TrialSpec.from_json({"base": {}}, source="R/x/experiment.json")


def _fake_result(name: str, lr: float, epoch_times: list[float], *, stop_reason: str | None = None):
    import pandas as pd

    metrics = {"epoch": len(epoch_times) - 1, "best_dice": 0.5 + lr, "stop_reason": stop_reason,
               "stopped_early": False, "time_total_s": sum(epoch_times)}
    return SimpleNamespace(metrics=metrics, config={"fold": 0, "dim": 3, "sweep": {"learning_rate": lr}},
                           path=f"/r/sweep/{name}", metrics_dataframe=pd.DataFrame({"time_this_iter_s": epoch_times}))


def test_a_trial_ended_by_its_own_max_time_is_not_counted_as_stopped_by_asha_and_savings_follow_the_time_budget():
    from nnunet_ray.distributed.sweep import summarise_sweep

    results = [_fake_result("a", 3e-3, [130.0, 100.0, 100.0], stop_reason="max_time"),  # ran to its --max-time
               _fake_result("b", 1e-4, [130.0, 100.0])]  # ASHA stopped it after 2 epochs
    outcome = summarise_sweep(results, max_epochs=10000, swept=["learning_rate"], max_seconds=600.0)
    table = outcome["table"].set_index("trial")
    assert not table.loc["a", "stopped_by_scheduler"] and table.loc["b", "stopped_by_scheduler"]
    assert outcome["stopped_early"] == 1
    assert outcome["epochs_saved"] == 4 and outcome["seconds_saved"] == pytest.approx(400.0)  # 600 s hold 6 epochs
    assert summarise_sweep(results, max_epochs=10000, swept=["learning_rate"])["epochs_saved"] == 9998  # no time box


@pytest.mark.parametrize("text, problem", [
    ("{", r"not JSON"),
    ('{"version": 3}', r"version 3 is newer"),
    ('{"budget_s": 30}', r"not a sweep budget record \(KeyError"),
])
def test_a_damaged_budget_record_names_the_file(tmp_path, text, problem):
    (tmp_path / BUDGET_FILE).write_text(text)
    with pytest.raises(RecordError, match=rf"^{tmp_path / BUDGET_FILE}: {problem}"):
        read_budget_record(str(tmp_path))

