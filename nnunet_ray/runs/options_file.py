"""A JSON file of training options: ``tune``'s ``best_config.json`` (the best trial's swept values), or one a user
writes; ``cv --config`` applies it to the options nobody chose. One object of option names to values, flat, as the
flags spell them in snake_case (``{"learning_rate": 0.003, "patch_size": [96, 96, 96]}``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from nnunet_ray.config import (
    ConfigError,
    TrainConfig,
    as_field_values,
    chosen_options,
    coerce_option,
    flag_name,
    with_options,
)
from nnunet_ray.data import storage

BEST_CONFIG_FILE = "best_config.json"  # in a sweep's folder: its best configuration's values
SETS_NOTHING = {"explicit"}  # a TrainConfig field that records which options were chosen; a file cannot set it


def save_best_config(sweep: str, values: dict[str, Any]) -> str:
    """Write ``<sweep>/best_config.json`` (a path or URI); returns its location."""
    location = storage.join(sweep, BEST_CONFIG_FILE)
    storage.write_json(location, values)
    return location


def read_options_file(path: str) -> dict[str, Any]:
    """The options in ``path`` (a path or URI), every key a training option.

    Raises:
        ConfigError: naming --config and the file: unreadable, not a JSON object, an unknown option, or a value
            not of the option's type.
    """
    try:
        values: Any = json.loads(storage.read_text(path))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{flag_name('config')}: cannot read {path} ({err})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{flag_name('config')}: {path} must hold a JSON object of training options")
    unknown = sorted(set(values) - ({f.name for f in dataclasses.fields(TrainConfig)} - SETS_NOTHING))
    if unknown:
        raise ConfigError(f"{flag_name('config')}: {path}: unknown training option {unknown[0]!r}")
    return {name: coerce_option(name, value, f"{flag_name('config')}: {path}") for name, value in values.items()}


def apply_options_file(cfg: TrainConfig, path: str) -> TrainConfig:
    """Training options from a JSON file (``tune``'s best_config.json) over the options the user did not choose
    (``chosen_options``: not given, and at their defaults or their recipe's values). A ``recipe`` in the file
    gives its values to the options nobody chose.

    Raises:
        ConfigError: the file is missing, not a JSON object, or names an unknown option.
    """
    if not path:
        return cfg
    values = read_options_file(path)
    kept = chosen_options(cfg)
    return with_options(cfg, **as_field_values({k: v for k, v in values.items() if k not in kept}))
