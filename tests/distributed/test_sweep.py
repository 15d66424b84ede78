"""A learning-rate x patch-size sweep on Ray Tune with ASHA, on the 2-CPU session cluster, on each engine (folds
trained inside their Tune trials, and on Ray Train).

Each trial asks for both CPUs, so trials run one after another in a fixed order: with seeded training and a
seeded search, ASHA's decisions repeat from run to run.
"""

from __future__ import annotations

import dataclasses
import json

import optuna
import pandas as pd
import pytest
import torch
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from nnunet_ray.config import ConfigError, TrainConfig, TuneConfig
from nnunet_ray.distributed.experiment import SCORE_MODE, TrialSpec, _search_algorithm, validate_trials
from nnunet_ray.distributed.fold_run import SCORE
from nnunet_ray.distributed.search_space import optuna_search, search_space
from nnunet_ray.distributed.sweep import RESULTS_CSV, format_outcome, run_sweep
from nnunet_ray.inference.sliding_window import predict_volume
from nnunet_ray.runs.checkpoint import load_model
from nnunet_ray.runs.options_file import BEST_CONFIG_FILE, apply_options_file
from tests.training.conftest import build_tiny_task

pytestmark = pytest.mark.slow  # several Tune + Train trials: minutes on 2 cores

SPACE = """
patch_size: {grid: [[16, 16, 16], [24, 24, 24]]}
"""


def _sweep_cfg(task, results, space_file, **overrides):
    train = TrainConfig(dim=3, cpus_per_worker=2, max_epochs=4, min_epochs=1, train_batches=1, batch_size=2,
                        dali_threads=1, warmup=0, image_every=0)
    values = dict(data=str(task), results=str(results), folds="0", learning_rate="loguniform:1e-4:3e-2",
                  search_space=str(space_file), num_samples=2, scheduler="asha", grace_period=1,
                  reduction_factor=2, name="sweep", train=train)
    return TuneConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_tiny_task(tmp_path_factory.mktemp("sweep_task"), cases=6, folds=3)


@pytest.fixture(scope="module", params=["tune", "train"])
def sweep(request, task, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"sweep_{request.param}")
    space = root / "space.yaml"
    space.write_text(SPACE)
    outcome = run_sweep(_sweep_cfg(task, root / "results", space, engine=request.param))
    return task, root, outcome


def test_asha_stops_a_trial_and_results_are_written(sweep):
    _, root, outcome = sweep
    table = pd.read_csv(root / "results" / "sweep" / RESULTS_CSV)
    assert len(table) == 4 and table["trial"].is_unique
    assert table["stopped_by_scheduler"].sum() >= 1 and outcome["stopped_early"] >= 1
    assert (table.loc[table["stopped_by_scheduler"], "epochs"] < 4).all()
    assert table["score"].is_monotonic_decreasing  # the best configuration first
    assert table["trial_best_dice"].between(0, 1).all()
    best = json.loads((root / "results" / "sweep" / BEST_CONFIG_FILE).read_text())
    assert set(best) == {"learning_rate", "patch_size"} and best == outcome["best_config"]
    assert (table["device_hours"] > 0).all() and outcome["device_hours"] == pytest.approx(table["device_hours"].sum())


def test_a_stopped_trials_cpus_go_to_the_next_trial_within_5_s(sweep):
    """Every trial holds both CPUs, so the trial after one that ASHA stopped can only start once Ray has freed the
    stopped trial's resources (in the trial itself: no Ray Train placement group to clean up)."""
    _, root, outcome = sweep
    if not _trained_in_trial(root):
        pytest.skip("Ray Train trials: freed by Train's placement-group cleaner, timed by the CV tests")
    spans = sorted(_trial_spans(root / "results" / "sweep"))
    stopped = set(outcome["table"].loc[outcome["table"]["stopped_by_scheduler"], "trial"])
    gaps = [after[0] - before[1] for before, after in zip(spans, spans[1:]) if before[2] in stopped]
    assert gaps and max(gaps) < 5.0, gaps


def _trained_in_trial(root) -> bool:
    return any(json.loads(p.read_text())["engine"] == "tune"
               for p in (root / "results" / "sweep").glob("*/summary.json"))


def _trial_spans(experiment) -> list[tuple[float, float, str]]:
    """(start, last report, trial) from each trial's result.json: Tune's wall-clock ``timestamp`` of a report less
    the trial's ``time_total_s`` at it is when the trial started."""
    spans = []
    for result in experiment.glob("*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines()]
        start = reports[0]["timestamp"] - reports[0]["time_total_s"]
        spans.append((start, float(reports[-1]["timestamp"]), result.parent.name))
    return spans


def test_best_config_is_accepted_by_cv_config(sweep):
    task, root, _ = sweep
    cfg = apply_options_file(TrainConfig(), str(root / "results" / "sweep" / BEST_CONFIG_FILE))
    best = json.loads((root / "results" / "sweep" / BEST_CONFIG_FILE).read_text())
    assert cfg.learning_rate == best["learning_rate"] and list(cfg.patch_size) == best["patch_size"]
    base = TrainConfig(**{**cfg.__dict__, "results": str(root / "cv"), "max_epochs": 1, "min_epochs": 1})
    validate_trials(TrialSpec(base=base, data_dirs={3: str(task)}, dims=(3,), folds=(0, 1, 2)))


def test_swept_patch_checkpoint_predicts_at_that_patch(sweep):
    task, root, _ = sweep
    trial = next((root / "results" / "sweep").glob("3d_fold0_*patch24x24x24_*"))
    checkpoint = sorted(trial.glob("epoch_*"))[-1]
    model, plans, config = load_model(checkpoint)
    assert plans.patch_size == (24, 24, 24) and config.train.patch_size == (24, 24, 24)
    image = torch.from_numpy(__import__("numpy").load(next(task.glob("*_x.npy"))))[None]
    with torch.no_grad():
        probs = predict_volume(image, model, patch_size=plans.patch_size, n_classes=plans.n_classes)
    assert probs.shape[1] == plans.n_classes and probs.shape[2:] == image.shape[2:]


def test_invalid_patch_size_is_refused_before_any_trial(sweep, tmp_path):
    task, root, _ = sweep
    space = tmp_path / "space.yaml"
    space.write_text("patch_size: {choice: [[16, 16, 16], [16, 16, 18]]}\n")
    with pytest.raises(ConfigError, match=r"--patch-size: patch size \[16, 16, 18\]: .*not a multiple of 4"):
        run_sweep(_sweep_cfg(task, tmp_path / "results", space))
    assert not (tmp_path / "results" / "sweep").exists()


# --------------------------------------------------------------------------------------- --search optuna

OPTUNA_SEED = 7


@pytest.fixture(scope="module", params=["tune"])
def optuna_sweep(request, task, tmp_path_factory):
    """3 configurations drawn by Optuna's TPE (1 random start-up, then 2 modelled), 2 epochs each. On the tune engine
    only: what TPE draws does not depend on the engine, and a Ray Train sweep (ASHA's, above) costs a minute here;
    the ConcurrencyLimiter Ray Train trials add is checked by test_optuna_on_ray_train_is_capped_at_the_concurrency."""
    root = tmp_path_factory.mktemp(f"optuna_{request.param}")
    cfg = _sweep_cfg(task, root / "results", "", search_space="", search="optuna", search_seed=OPTUNA_SEED,
                     num_samples=3, name="optuna", patch_size=("16,16,16", "24,24,24"), engine=request.param)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=2))
    return cfg, root / "results" / "optuna", run_sweep(cfg)


def test_optuna_drew_the_configurations(optuna_sweep):
    cfg, path, outcome = optuna_sweep
    assert len(pd.read_csv(path / RESULTS_CSV)) == 3
    table = outcome["table"]  # what was written, before the CSV's float rounding
    assert table["trial"].is_unique and table["score"].is_monotonic_decreasing
    # The experiment's OptunaSearch state (saved by Tune for --resume): one TPE study holding every trial's values
    # and its finite score, as ASHA saw it.
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(path))
    study = searcher._ot_study  # OptunaSearch has no accessor for its study
    assert isinstance(study.sampler, optuna.samplers.TPESampler) and len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE and 0 <= t.value <= 1 for t in study.trials)
    drawn = sorted((t.params["sweep/learning_rate"], t.params["sweep/patch_size"]) for t in study.trials)
    assert drawn == sorted(zip(table["learning_rate"], table["patch_size"]))
    # The first (start-up) configuration is the seeded sampler's, as a fresh searcher with the seed draws it.
    _, fresh = optuna_search(search_space(cfg), seed=OPTUNA_SEED, num_samples=3, metric="score", mode="max")
    first = fresh.suggest("first")["sweep"]
    assert study.trials[0].params == {"sweep/learning_rate": first["learning_rate"],
                                      "sweep/patch_size": first["patch_size"]}


def test_optuna_best_config_is_accepted_by_cv_config(optuna_sweep, task, tmp_path):
    _, path, outcome = optuna_sweep
    best = json.loads((path / BEST_CONFIG_FILE).read_text())
    assert set(best) == {"learning_rate", "patch_size"} and best == outcome["best_config"]
    cfg = apply_options_file(TrainConfig(), str(path / BEST_CONFIG_FILE))
    assert cfg.learning_rate == best["learning_rate"] and list(cfg.patch_size) == best["patch_size"]
    base = dataclasses.replace(cfg, results=str(tmp_path / "cv"), max_epochs=1, min_epochs=1)
    validate_trials(TrialSpec(base=base, data_dirs={3: str(task)}, dims=(3,), folds=(0, 1, 2)))


def test_optuna_sweep_resumes_with_its_searcher(optuna_sweep):
    """Tuner.restore unpickles the experiment's OptunaSearch (in a ConcurrencyLimiter on Ray Train) and its state: a
    finished sweep resumed reruns nothing and reports the same trials."""
    cfg, path, outcome = optuna_sweep
    before = {p.parent.name: p.stat().st_mtime for p in path.glob("3d_fold0_*/metrics.jsonl")}
    resumed = run_sweep(dataclasses.replace(cfg, resume=True))
    assert len(before) == 3
    assert {p.parent.name: p.stat().st_mtime for p in path.glob("3d_fold0_*/metrics.jsonl")} == before
    assert sorted(resumed["table"]["trial"]) == sorted(outcome["table"]["trial"])
    assert resumed["best_config"] == outcome["best_config"]


def test_optuna_on_ray_train_is_capped_at_the_concurrency():
    # Ray Train trials are invisible to Tune's placement, so a model-based searcher is capped at what the cluster
    # holds; trials trained in their Tune trial need no cap (Tune asks for one pending trial at a time).
    searcher = OptunaSearch(metric=SCORE, mode=SCORE_MODE)
    capped = _search_algorithm(searcher, 2, random_state=0)
    assert isinstance(capped, ConcurrencyLimiter) and capped.max_concurrent == 2 and capped.searcher is searcher
    assert _search_algorithm(searcher, None, random_state=0) is searcher


# --------------------------------------------------------------------------------------- the default sweep, --budget

def test_default_sweep_is_the_learning_rate_and_budget_stops_it(task, tmp_path):
    """No search flag: the learning rate is drawn log-uniformly in RAdam's 1e-4..1e-2. Two trials fit the cluster at
    once (one CPU each) and would train 1000 epochs; --budget stops them, the other two never start, the run is no
    error and best_config.json holds the best learning rate so far."""
    train = TrainConfig(dim=3, cpus_per_worker=1, max_epochs=1000, min_epochs=1, train_batches=1, batch_size=2,
                        dali_threads=1, warmup=0, image_every=0, val_cases=1)
    # 30 s: a trial's process takes up to ~20 s to start on a busy 2-core machine.
    cfg = TuneConfig(data=str(task), results=str(tmp_path / "results"), folds="0", num_samples=4, scheduler="none",
                     name="budget", budget="00:00:30", train=train)
    outcome = run_sweep(cfg)
    path, table = tmp_path / "results" / "budget", outcome["table"]  # as written, before the CSV's rounding
    assert outcome["budget"] == "00:00:30" and outcome["trials"] == {"planned": 4, "trained": 2,
                                                                     "stopped_by_budget": 2, "not_started": 2}
    assert len(pd.read_csv(path / RESULTS_CSV)) == 2
    assert table["stopped_by_budget"].all() and not table["stopped_by_scheduler"].any()
    assert table["learning_rate"].between(1e-4, 1e-2).all() and table["learning_rate"].is_unique
    assert (table["epochs"] >= 1).all() and outcome["stopped_early"] == 0
    best = json.loads((path / BEST_CONFIG_FILE).read_text())
    assert best == outcome["best_config"] == {"learning_rate": table.loc[0, "learning_rate"]}
    assert "--budget 00:00:30 ran out: 2 of 4 trials trained" in format_outcome(outcome)
    for trial, rate in zip(table["trial"], table["learning_rate"]):  # each run recorded its drawn rate as given
        saved = json.loads(sorted((path / trial).glob("epoch_*/config.json"))[-1].read_text())
        assert saved["learning_rate"] == rate and "learning_rate" in saved["explicit"]
