"""Bad input to `cv` / `tune` fails with one line naming the flag, before Ray starts or any trial runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from nnunet_ray.config import ConfigError, CVConfig, TrainConfig, TuneConfig, parse_int_list
from nnunet_ray.distributed.cv import run_cv
from nnunet_ray.distributed.search_space import (
    load_space_file,
    optuna_search,
    parse_flag,
    search_space,
    startup_trials,
    tune_domains,
)
from nnunet_ray.distributed.sweep import run_sweep
from nnunet_ray.distributed.trial_spec import max_concurrent_trials, trial_name
from nnunet_ray.runs.options_file import apply_options_file
from tests.training.conftest import build_tiny_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """6 cases, 16^3 patches, 5 folds."""
    return build_tiny_task(tmp_path_factory.mktemp("inputs"), cases=6, folds=5)


@pytest.mark.parametrize("text, expected", [("0-4", (0, 1, 2, 3, 4)), ("3", (3,)), ("0,2,2", (0, 2)),
                                            ("1-2,4", (1, 2, 4))])
def test_fold_lists(text, expected):
    assert parse_int_list(text, "folds") == expected


@pytest.mark.parametrize("text", ["a", "1-x", ""])
def test_bad_fold_lists_name_the_flag(text):
    with pytest.raises(ConfigError, match="--folds"):
        parse_int_list(text, "folds")


@pytest.mark.parametrize("flag, kind, values", [
    ("loguniform:1e-4:1e-2", "loguniform", [1e-4, 1e-2]),
    ("choice:1e-3,3e-3", "choice", [1e-3, 3e-3]),
    ("grid:1e-3,3e-3", "grid", [1e-3, 3e-3]),
    ("3e-3", "choice", [3e-3]),
])
def test_learning_rate_flag_spaces(flag, kind, values):
    assert parse_flag("learning_rate", flag) == (kind, values)


@pytest.mark.parametrize("flag, problem", [("loguniform:0:1", "low > 0"), ("uniform:2:1", "low < high"),
                                           ("normal:1:2", "unknown kind"), ("choice:x", "not a valid float")])
def test_bad_learning_rate_flags(flag, problem):
    with pytest.raises(ConfigError, match=f"--learning-rate: .*{problem}"):
        parse_flag("learning_rate", flag)


def test_yaml_space_types_values_and_domains(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("batch_size: {grid: [2, 4]}\nlearning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
                    "patch_size: {choice: [[16, 16, 16], [24, 24, 24]]}\nresidual: true\n"
                    "min_epochs: {uniform: [1, 5]}\n")
    space = load_space_file(str(path))
    assert space["batch_size"] == ("grid", [2, 4]) and space["residual"] == ("choice", [True])
    assert space["patch_size"] == ("choice", [(16, 16, 16), (24, 24, 24)])
    domains = tune_domains(space)
    assert domains["residual"] is True and domains["batch_size"] == {"grid_search": [2, 4]}
    assert domains["patch_size"].categories == [[16, 16, 16], [24, 24, 24]]
    assert isinstance(domains["min_epochs"].sample(), int)


@pytest.mark.parametrize("text, problem", [
    ("lerning_rate: {choice: [1.0e-3]}", "'lerning_rate' is not a training option"),
    ("fold: {grid: [0, 1]}", "'fold' is set per trial"),
    ("batch_size: {choice: [2.5]}", "not a valid int"),
    ("learning_rate: {choice: []}", "at least one value"),
    ("[1, 2]", "must map training options"),
])
def test_bad_yaml_spaces(tmp_path, text, problem):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_space_file(str(path))


def test_empty_search_space_is_refused(tmp_path):
    (tmp_path / "space.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="--search-space: the search space is empty"):
        search_space(TuneConfig(data="x", results="y", search_space=str(tmp_path / "space.yaml")))


def test_unknown_yaml_option_stops_tune_before_ray(task, tmp_path):
    (tmp_path / "space.yaml").write_text("learning_rat: {choice: [1.0e-3]}\n")
    with pytest.raises(ConfigError, match="learning_rat"):
        run_sweep(TuneConfig(data=str(task), results=str(tmp_path), search_space=str(tmp_path / "space.yaml")))
    assert not any(tmp_path.glob("*_tune"))


@pytest.mark.parametrize("space, flags, problem", [
    ("batch_size: {grid: [2, 4]}\n", {}, "--search: optuna cannot grid-search batch_size; use choice"),
    ("", {"learning_rate": "grid:1e-3,3e-3"}, "--search: optuna cannot grid-search learning_rate"),
    ("residual: true\n", {"learning_rate": "3e-3"}, "--search: optuna has nothing to draw \\(learning_rate, "
     "residual fixed\\)"),
    ("", {"learning_rate": "loguniform:1e-4:1e-2", "folds": "0-1"}, "--folds: '0-1': --search optuna tunes on one "
     "fold"),
])
def test_optuna_refuses_what_tpe_cannot_search_before_ray(task, tmp_path, space, flags, problem):
    (tmp_path / "space.yaml").write_text(space or "# nothing\n")
    cfg = TuneConfig(data=str(task), results=str(tmp_path / "results"), search="optuna",
                     search_space=str(tmp_path / "space.yaml"), **flags)
    with pytest.raises(ConfigError, match=problem):
        run_sweep(cfg)
    assert not (tmp_path / "results").exists()


def test_optuna_draws_with_a_seeded_tpe_and_keeps_fixed_values():
    space = {"learning_rate": ("loguniform", [1e-4, 1e-2]), "patch_size": ("choice", [(16, 16, 16), (24, 24, 24)]),
             "residual": ("choice", [True])}
    draws = []
    for seed in (3, 3, 4):
        fixed, searcher = optuna_search(space, seed=seed, num_samples=8, metric="score", mode="max")
        assert fixed == {"residual": True}
        draws.append([searcher.suggest(f"t{i}")["sweep"] for i in range(2)])
    assert draws[0] == draws[1] != draws[2]  # the seed reproduces the configurations
    assert set(draws[0][0]) == {"learning_rate", "patch_size"} and 1e-4 <= draws[0][0]["learning_rate"] <= 1e-2
    assert draws[0][0]["patch_size"] in ([16, 16, 16], [24, 24, 24])
    assert isinstance(searcher._ot_study.sampler, optuna.samplers.TPESampler)  # OptunaSearch's study (no accessor)


@pytest.mark.parametrize("num_samples, expected", [(1, 1), (3, 1), (8, 4), (40, 10)])
def test_tpe_startup_trials_are_half_the_budget_up_to_optunas_default(num_samples, expected):
    assert startup_trials(num_samples) == expected


def test_fold_that_does_not_exist(task, tmp_path):
    with pytest.raises(ConfigError, match=r"--folds: fold 7 does not exist: 3d data has 5 folds \(0-4\)"):
        run_cv(CVConfig(data=str(task), results=str(tmp_path), folds="7"))


def test_raw_dataset_without_labels(synth_task, tmp_path):
    raw = shutil.copytree(synth_task, tmp_path / synth_task.name)
    shutil.rmtree(raw / "labelsTr")
    with pytest.raises(ConfigError, match=r"--data: .* no label file for 6 of 6 training cases"):
        run_cv(CVConfig(data=str(raw), results=str(tmp_path / "results")))
    assert not (tmp_path / "results").exists()


def test_preprocessed_data_without_label_arrays(task, tmp_path):
    data = shutil.copytree(task, tmp_path / "3d")
    next(data.glob("*_y.npy")).unlink()
    with pytest.raises(ConfigError, match="--data: .* no label array for 1 cases"):
        run_cv(CVConfig(data=str(data), results=str(tmp_path / "results")))


def test_data_that_is_neither_raw_nor_preprocessed(tmp_path):
    with pytest.raises(ConfigError, match="--data: .* neither a raw dataset"):
        run_cv(CVConfig(data=str(tmp_path), results=str(tmp_path)))


def test_unusable_patch_size_is_refused_before_any_trial(task, tmp_path):
    train = TrainConfig(patch_size=(16, 16, 18))
    with pytest.raises(ConfigError, match=r"--patch-size: patch size \[16, 16, 18\]: .*not a multiple of 4.*try"):
        run_cv(CVConfig(data=str(task), results=str(tmp_path), folds="0", train=train))
    assert not any(tmp_path.iterdir())


def test_dims_that_the_data_does_not_hold(task, tmp_path):
    with pytest.raises(ConfigError, match="--dims: .* holds 3d data only"):
        run_cv(CVConfig(data=str(task), results=str(tmp_path), dims="2,3"))


def test_config_file_with_an_unknown_option(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"learning_rate": 1e-3, "patch": [1, 2, 3]}))
    with pytest.raises(ConfigError, match="--config: .* unknown training option 'patch'"):
        apply_options_file(TrainConfig(), str(path))


def test_config_file_fills_only_options_left_at_defaults(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"learning_rate": 3e-3, "patch_size": [24, 24, 24], "batch_size": 4}))
    cfg = apply_options_file(TrainConfig(batch_size=8), str(path))
    assert (cfg.learning_rate, cfg.patch_size, cfg.batch_size) == (3e-3, (24, 24, 24), 8)


def test_cli_prints_one_line_before_ray_starts(task, tmp_path):
    result = subprocess.run([sys.executable, "-m", "nnunet_ray.cli", "cv", "--data", str(task), "--results",
                             str(tmp_path), "--folds", "7"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "nnunet-ray cv: error: --folds: fold 7 does not exist: 3d data has 5 folds (0-4)"]


@pytest.mark.parametrize("per_trial, cluster, expected", [
    ({"CPU": 1.0, "GPU": 0.0}, {"CPU": 2.0}, 2),
    ({"CPU": 2.0, "GPU": 0.0}, {"CPU": 2.0}, 1),
    ({"CPU": 2.0, "GPU": 2.0}, {"CPU": 64.0, "GPU": 8.0}, 4),
    ({"CPU": 1.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 8.0}, 4),
])
def test_concurrency_follows_the_cluster(per_trial, cluster, expected):
    assert max_concurrent_trials(per_trial, cluster) == expected


def test_a_trial_larger_than_the_cluster_is_refused():
    with pytest.raises(ConfigError, match="a trial needs 4 CPU, 4 GPU but the cluster has 8 CPU, 2 GPU"):
        max_concurrent_trials({"CPU": 4.0, "GPU": 4.0}, {"CPU": 8.0, "GPU": 2.0})


def test_trial_names_are_stable_and_unique_per_trial():
    cv_trial = SimpleNamespace(config={"dim": 3, "fold": 2, "sweep": {}}, trial_id="abc12_00007")
    assert trial_name(cv_trial) == "3d_fold2"
    sweep = {"learning_rate": 0.0031234, "patch_size": [64, 96, 80]}
    one = SimpleNamespace(config={"dim": 3, "fold": 0, "sweep": sweep}, trial_id="abc12_00001")
    two = SimpleNamespace(config={"dim": 3, "fold": 0, "sweep": sweep}, trial_id="abc12_00002")
    assert trial_name(one) == "3d_fold0_lr0.00312_patch64x96x80_abc12_00001" != trial_name(two)
