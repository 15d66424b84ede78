"""The flag generator: every field of every command's config round-trips through its flag; bool pairs, typed
tuples, aliases, and a clear error for a type it cannot express."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing

import pytest

from nnunet_ray.cli import COMMANDS, _flag_names, add_config_flags, build_parser
from nnunet_ray.config import opt


def _other_value(f: dataclasses.Field, kind) -> tuple[list[str], object]:
    """Command-line words that set ``f`` to a non-default value, and that value."""
    flag = _flag_names(f)[0]
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


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_round_trips_through_its_flag(command):
    cls = COMMANDS[command][0]
    parser = build_parser()
    defaults = vars(parser.parse_args([command]))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        assert defaults[f.name] == (list(f.default) if isinstance(f.default, tuple) else f.default), f.name
        words, value = _other_value(f, hints[f.name])
        parsed = getattr(parser.parse_args([command, *words]), f.name)
        assert (tuple(parsed) if isinstance(parsed, list) else parsed) == value, (command, f.name, words)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_bool_can_be_switched_both_ways(command):
    cls, parser = COMMANDS[command][0], build_parser()
    for f in dataclasses.fields(cls):
        if typing.get_type_hints(cls)[f.name] is bool:
            flag = _flag_names(f)[0]
            assert getattr(parser.parse_args([command, flag, "--no-" + flag[2:]]), f.name) is False
            assert getattr(parser.parse_args([command, "--no-" + flag[2:], flag]), f.name) is True


@pytest.mark.parametrize("words, field, value", [
    (["train", "--num_workers", "3"], "dali_threads", 3),
    (["train", "--num-workers", "3"], "dali_threads", 3),
    (["preprocess", "--num_workers", "3"], "case_workers", 3),
    (["train", "--steps", "10", "20"], "lr_milestones", [10, 20]),
    (["train", "--test_batches", "2"], "val_cases", 2),
    (["train", "--learning_rate", "0.01"], "learning_rate", 0.01),
])
def test_reference_spellings_are_aliases(words, field, value):
    assert getattr(build_parser().parse_args(words), field) == value


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
