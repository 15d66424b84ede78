"""The flag generator: every field of every command's config round-trips through its flag; bool pairs, typed
tuples, aliases, and a clear error for a type it cannot express."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing

import pytest

from nnunet_ray.cli import COMMANDS, build_parser
from nnunet_ray.config import ConfigError, EvaluateConfig, SlidingWindow, TrainConfig, opt
from nnunet_ray.config.flags import add_config_flags, flag_fields, flag_names, nested_fields


def _other_value(f: dataclasses.Field, kind) -> tuple[list[str], object]:
    """Command-line words that set ``f`` to a non-default value, and that value."""
    flag = flag_names(f)[0]
    if kind is bool:
        return ([flag] if not f.default else ["--no-" + flag[2:]]), not f.default
    if typing.get_origin(kind) is tuple:
        element = typing.get_args(kind)[0]
        return [flag, "3", "5"], (element(3), element(5))
    choices = f.metadata.get("choices")
    if choices:
        value = next(c for c in choices if c != f.default)
        return [flag, str(value)], value
    value = {int: lambda d: d + 3, float: lambda d: d + 0.25, str: lambda d: d + "_x"}[kind](f.default)
    return [flag, str(value)], value


def _flag_fields(cls: type) -> list[tuple[str, dataclasses.Field, object]]:
    """(dest, field, type) of every flag of a command: its config's fields, a nested config's (cv/tune's
    ``train``) under ``<field>.<name>``."""
    hints, out = typing.get_type_hints(cls), []
    for f in flag_fields(cls):
        if "nested" not in f.metadata:
            out.append((f.name, f, hints[f.name]))
            continue
        sub_hints = typing.get_type_hints(type(f.default))
        out += [(f"{f.name}.{sub.name}", sub, sub_hints[sub.name]) for sub in nested_fields(cls, f)]
    return out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_round_trips_through_its_flag(command):
    cls = COMMANDS[command][0]
    parser = build_parser()
    defaults = vars(parser.parse_args([command]))
    for dest, f, kind in _flag_fields(cls):
        assert defaults[dest] == (list(f.default) if isinstance(f.default, tuple) else f.default), dest
        words, value = _other_value(f, kind)
        parsed = getattr(parser.parse_args([command, *words]), dest)
        assert (tuple(parsed) if isinstance(parsed, list) else parsed) == value, (command, dest, words)


def test_only_the_recorded_explicit_options_have_no_flag():
    unflagged = {(cls.__name__, f.name) for cls, _, _ in COMMANDS.values() for f in dataclasses.fields(cls)
                 if f not in flag_fields(cls)}
    nested = {f.name for f in dataclasses.fields(TrainConfig) if f not in flag_fields(TrainConfig)}
    assert unflagged == {("TrainConfig", "explicit")} and nested == {"explicit"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_bool_can_be_switched_both_ways(command):
    cls, parser = COMMANDS[command][0], build_parser()
    for dest, f, kind in _flag_fields(cls):
        if kind is bool:
            flag = flag_names(f)[0]
            assert getattr(parser.parse_args([command, flag, "--no-" + flag[2:]]), dest) is False
            assert getattr(parser.parse_args([command, "--no-" + flag[2:], flag]), dest) is True


@pytest.mark.parametrize("command, owned", [
    ("cv", {"data", "results", "fold", "experiment", "resume_training", "gpus", "workers", "benchmark", "dim",
            "explicit"}),
    ("tune", {"data", "results", "fold", "experiment", "resume_training", "gpus", "workers", "benchmark",
              "learning_rate", "patch_size", "scheduler", "explicit"}),
])
def test_nested_training_options_become_the_trials_config(command, owned):
    """cv/tune: every training option except those set per trial (or owned by the command) is a flag, and the
    parsed flags build the nested TrainConfig; the rest keep TrainConfig's defaults."""
    from nnunet_ray.cli import _config_from

    cls = COMMANDS[command][0]
    train_field = next(f for f in dataclasses.fields(cls) if f.name == "train")
    flagged = {f.name for f in nested_fields(cls, train_field)}
    assert flagged == {f.name for f in dataclasses.fields(TrainConfig)} - owned
    words = [command, "--data", "d", "--results", "r", "--max-epochs", "7", "--no-amp", "--num_workers", "3",
             "--steps", "2", "4"]
    cfg = _config_from(cls, build_parser().parse_args(words))
    assert (cfg.train.max_epochs, cfg.train.amp, cfg.train.dali_threads,
            cfg.train.lr_milestones) == (7, False, 3, (2, 4))
    assert (cfg.train.data, cfg.train.fold, cfg.train.workers) == ("", 0, TrainConfig().workers)


@pytest.mark.parametrize("words, field, value", [
    (["train", "--num_workers", "3"], "dali_threads", 3),
    (["train", "--num-workers", "3"], "dali_threads", 3),
    (["preprocess", "--num_workers", "3"], "case_workers", 3),
    (["train", "--steps", "10", "20"], "lr_milestones", [10, 20]),
    (["train", "--test_batches", "2"], "val_cases", 2),
    (["train", "--learning_rate", "0.01"], "learning_rate", 0.01),
    (["cv", "--num_workers", "3"], "train.dali_threads", 3),
    (["tune", "--test_batches", "2"], "train.val_cases", 2),
])
def test_reference_spellings_are_aliases(words, field, value):
    assert getattr(build_parser().parse_args(words), field) == value


@pytest.mark.parametrize("words, field", [
    (["train", "--data", "d", "--results", "r"], "val_batch_size"),
    (["predict", "--models", "m", "--input", "i", "--out", "o"], "val_batch_size"),
    (["evaluate", "--cv", "e", "--data", "d"], "val_batch_size"),
    (["cv", "--data", "d", "--results", "r"], "train.val_batch_size"),
    (["tune", "--data", "d", "--results", "r"], "train.val_batch_size"),
])
def test_sliding_window_options_are_declared_once_and_every_predicting_command_has_them(words, field):
    # --sw-batch-size: MONAI's name (sliding_window_inference's sw_batch_size) for the reference's --val-batch-size.
    from nnunet_ray.cli import _config_from

    args = build_parser().parse_args([*words, "--sw-batch-size", "3"])
    target = _config_from(COMMANDS[words[0]][0], args)
    for part in field.split("."):
        target = getattr(target, part)
    assert target == 3
    window_fields = {f.name: f for f in dataclasses.fields(SlidingWindow)}
    config = {cls.__name__: cls for cls in (TrainConfig, EvaluateConfig)}
    for cls in config.values():  # inherited, not redeclared: the same field objects' help and checks
        mine = {f.name: f for f in dataclasses.fields(cls) if f.name in window_fields}
        assert {n: f.metadata for n, f in mine.items()} == {n: f.metadata for n, f in window_fields.items()}


def test_window_options_without_cv_are_refused_by_evaluate():
    with pytest.raises(ConfigError, match="--tta: and the other sliding-window options go with --cv"):
        EvaluateConfig(preds="p", labels="l", overlap=0.25).validate()
    assert EvaluateConfig(cv="e", data="d", overlap=0.25).validate().window() == SlidingWindow(overlap=0.25)


def test_tuple_elements_keep_their_type_and_fixed_lengths_are_enforced(capsys):
    @dataclasses.dataclass(frozen=True)
    class Typed:
        scales: tuple[float, ...] = opt((), "floats")
        names: tuple[str, ...] = opt(("a",), "strings")
        shape: tuple[int, int] = opt((1, 1), "exactly two ints")

    parser = argparse.ArgumentParser(prog="typed")
    add_config_flags(parser, Typed)
    args = parser.parse_args(["--scales", "0.5", "2", "--names", "x", "y", "--shape", "4", "5"])
    assert args.scales == [0.5, 2.0] and args.names == ["x", "y"] and args.shape == [4, 5]
    with pytest.raises(SystemExit):
        parser.parse_args(["--shape", "4"])
    assert "--shape: expected 2 arguments" in capsys.readouterr().err


def test_unsupported_type_is_a_clear_error_naming_the_field():
    @dataclasses.dataclass(frozen=True)
    class Odd:
        mapping: dict = opt(None, "not expressible on a command line")

    with pytest.raises(TypeError, match="mapping: the CLI cannot express type"):
        add_config_flags(argparse.ArgumentParser(), Odd)


def test_abbreviations_are_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--learning", "0.1"])
    assert "unrecognized arguments: --learning" in capsys.readouterr().err


def test_commands_show_library_logs_with_prefixed_warnings(capsys):
    from nnunet_ray.cli import configure_logging

    package = logging.getLogger("nnunet_ray")
    before = (list(package.handlers), package.level)
    try:
        configure_logging()
        configure_logging()  # idempotent: one handler, one line per record
        log = logging.getLogger("nnunet_ray.distributed.preprocess")
        log.info("  [1/2] case_000 done (0.1 s)")
        log.warning("3 cases for 5 folds")
        lines = capsys.readouterr().err.splitlines()
        assert lines == ["  [1/2] case_000 done (0.1 s)", "warning: 3 cases for 5 folds"]
    finally:
        package.handlers[:] = before[0]
        package.setLevel(before[1])


def test_a_plans_file_from_a_newer_version_is_one_line_exit_2(synth_task, tmp_path, capsys):
    import json

    from nnunet_ray.cli import main

    plans_dir = tmp_path / "pre" / synth_task.name / "3d"
    plans_dir.mkdir(parents=True)
    (plans_dir / "plans.json").write_text(json.dumps({"version": 99}))
    assert main(["preprocess", "--data", str(synth_task), "--results", str(tmp_path / "pre")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plans version 99 is newer" in err[0]
