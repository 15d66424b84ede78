"""Command-line flags generated from the typed configs, and the configs rebuilt from the parsed flags.

Every flag is the kebab-case name of a config field (``--learning-rate``); its snake_case spelling and the field's
``aliases`` are accepted too. A bool gets ``--x`` and ``--no-x``; ``tuple[T, ...]`` takes one or more values. A field
with ``nested`` metadata (cv/tune's ``train``) adds its config's flags in a group. The flags given are recorded
(``GIVEN``): ``--recipe`` fills only the training options nobody typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, cast

from nnunet_ray.config.base import as_field_values, flag_name
from nnunet_ray.config.recipes import apply_recipe
from nnunet_ray.config.train import TrainConfig

SCALARS: dict[type, Callable[[str], Any]] = {int: int, float: float, str: str}
GIVEN = "_given"  # the parsed namespace's set of the dests whose flags were on the command line


class _Given(argparse.Action):
    """Stores a flag's value (a bool's ``--x`` / ``--no-x``: its ``const``) and records that it was given: a
    recipe must not override what the user typed, even a value equal to the default."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})


def flag_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a config that are flags (all but those marked ``flag=False``)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]


def flag_names(f: dataclasses.Field[Any]) -> list[str]:
    """The field's flag (``cli`` metadata or kebab-case), its snake_case spelling, then any ``aliases``."""
    names = [f.metadata.get("cli", flag_name(f.name))]
    if "_" in f.name:
        names.append("--" + f.name)  # the reference's snake_case spelling
    return names + [a for a in f.metadata.get("aliases", ()) if a not in names]


def _add_field(parser: Any, f: dataclasses.Field[Any], kind: Any, prefix: str = "") -> None:
    """Add one config field as a flag: bool -> ``--x`` / ``--no-x``, ``tuple[T, ...]`` -> one or more T values
    (``tuple[T, T]`` -> exactly two), int / float / str -> one value (with ``choices`` when given). Its value
    lands in ``args.<prefix><name>``.

    Raises:
        TypeError: a field type the generator cannot express, naming the field.
    """
    names, help_text, dest = flag_names(f), f.metadata.get("help", ""), prefix + f.name
    metavar = f.name.upper() if prefix else None  # not argparse's TRAIN.NAME for a nested field
    if kind is bool:
        parser.add_argument(*names, dest=dest, action=_Given, nargs=0, const=True, default=f.default, help=help_text)
        parser.add_argument("--no-" + names[0][2:], dest=dest, action=_Given, nargs=0, const=False,
                            default=argparse.SUPPRESS, help=f"turn {names[0]} off")
        return
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple and args and all(a in SCALARS for a in args if a is not Ellipsis):
        nargs = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
        parser.add_argument(*names, dest=dest, action=_Given, type=SCALARS[args[0]], nargs=nargs,
                            default=list(cast(tuple[Any, ...], f.default)), metavar=metavar, help=help_text)
        return
    if kind not in SCALARS:
        raise TypeError(f"{f.name}: the CLI cannot express type {kind!r}; use bool, int, float, str or tuple[T, ...]")
    choices = f.metadata.get("choices")
    parser.add_argument(*names, dest=dest, action=_Given, type=SCALARS[kind], default=f.default, choices=choices,
                        metavar=None if choices else metavar, help=help_text)


def nested_fields(cls: type, f: dataclasses.Field[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of a ``nested`` config field (cv/tune's ``train``) that get flags: all but the names in its
    ``nested`` metadata (set per trial) and any whose flag the outer command already has."""
    outer = {flag_names(o)[0] for o in flag_fields(cls)}
    return [sub for sub in flag_fields(type(f.default))
            if sub.name not in f.metadata["nested"] and flag_names(sub)[0] not in outer]


def _option_group(cls: type, name: str) -> type | None:
    """The option group (a base dataclass of ``cls``) that declares field ``name``; None when ``cls`` itself does."""
    return next((base for base in cls.__mro__[1:] if name in vars(base).get("__annotations__", {})), None)


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add a flag for every field of the config dataclass ``cls`` (see ``_add_field``); a field with ``nested``
    metadata adds its config's fields (``nested_fields``) in a group, landing in ``args.<field>.<name>``."""
    hints = typing.get_type_hints(cls)
    groups: dict[type, Any] = {}
    for f in flag_fields(cls):
        if "nested" not in f.metadata:
            owner = _option_group(cls, f.name)
            if owner is not None and owner not in groups:  # an option group's flags under its own --help heading
                title = (owner.__doc__ or owner.__name__).split("\n")[0].split(":")[0].rstrip(".").lower()
                groups[owner] = parser.add_argument_group(title)
            _add_field(groups[owner] if owner is not None else parser, f, hints[f.name])
            continue
        nested = parser.add_argument_group(f.metadata.get("help", f.name))
        sub_hints = typing.get_type_hints(type(f.default))
        for sub in nested_fields(cls, f):
            _add_field(nested, sub, sub_hints[sub.name], prefix=f.name + ".")


def _values(cls: type, args: argparse.Namespace, default: Any = None, prefix: str = "") -> dict[str, Any]:
    values = {f.name: getattr(args, prefix + f.name, getattr(default, f.name, f.default)) for f in flag_fields(cls)}
    return as_field_values(values)


def build_config(cls: type, args: argparse.Namespace, default: Any = None, prefix: str = "") -> Any:
    """The config ``cls`` from the parsed flags; a ``TrainConfig`` takes its recipe's values where no flag was given."""
    config = cls(**_values(cls, args, default, prefix))
    given = {dest[len(prefix):] for dest in getattr(args, GIVEN, ()) if dest.startswith(prefix)}
    return apply_recipe(config, given) if cls is TrainConfig else config


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config ``cls`` from the parsed flags, its ``nested`` configs included (not yet validated)."""
    config = build_config(cls, args)
    for f in flag_fields(cls):
        if "nested" in f.metadata:  # the nested config keeps its defaults for the flags the outer one owns
            config = dataclasses.replace(config, **{f.name: build_config(type(f.default), args, f.default,
                                                                         f.name + ".")})
    return config
