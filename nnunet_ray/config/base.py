"""The config machinery: option fields with CLI help, errors that name the flag, dict round trips, checks.

Each field's ``metadata["help"]`` is its CLI help; the CLI builds its flags from these dataclasses
(kebab-case: ``learning_rate`` -> ``--learning-rate``). ``validate()`` raises ``ConfigError`` naming the
flag to fix. At the Ray boundary a config travels as ``asdict(cfg)`` and is rebuilt with ``from_dict``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """A user-facing option is invalid; the message names the flag to fix."""


class RunError(RuntimeError):
    """A distributed run failed for good (retries used up); the message names the cause and the run folder."""


class Stopped(RunError):
    """Ctrl-C or SIGTERM stopped the work before it finished; the message says what finished and how to continue."""


def opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with CLI help text and optional metadata: ``choices``, ``cli`` (the flag, when not the
    field's kebab-case name), ``aliases`` (more accepted spellings, e.g. the reference's) and ``flag=False`` (no
    flag: a field the CLI fills itself)."""
    return field(default=default, metadata={"help": help, **extra})


def flag_name(name: str) -> str:
    """``learning_rate`` -> ``--learning-rate``: how a field is spelled on the command line."""
    return "--" + name.replace("_", "-")


def as_field_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Option values from JSON, argparse or Tune, with lists back to the tuples config fields hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Rebuild a config from ``asdict`` output, ignoring unknown keys (older/newer checkpoints)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**as_field_values({k: v for k, v in values.items() if k in names}))


def parse_duration(text: str, name: str) -> float:
    """``HH:MM:SS`` (hours may exceed 23) -> seconds; a ConfigError names the flag otherwise."""
    parts = text.split(":")
    valid = len(parts) == 3 and all(p.isdigit() for p in parts) and int(parts[1]) < 60 and int(parts[2]) < 60
    _check(valid, name, f"{text!r} is not HH:MM:SS")
    hours, minutes, seconds = (int(p) for p in parts)
    _check(hours * 3600 + minutes * 60 + seconds > 0, name, "must be longer than 00:00:00")
    return float(hours * 3600 + minutes * 60 + seconds)


def _check(condition: bool, name: str, problem: str) -> None:
    if not condition:
        raise ConfigError(f"{flag_name(name)}: {problem}")


def _check_fields(cfg: Any) -> None:
    """Every field with choices holds one of them; every float is finite (argparse's ``float`` takes ``inf`` and
    ``nan``, which no option means)."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices is not None and value not in choices:
            raise ConfigError(f"{flag_name(f.name)}: {value!r} is not one of {', '.join(map(str, choices))}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag_name(f.name)}: {value!r} is not a finite number")
