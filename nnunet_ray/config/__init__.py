"""Typed, frozen configs for every command: the one object that flows from the CLI to the Ray workers.

Each field's ``metadata["help"]`` is its CLI help; the CLI builds its flags from these dataclasses
(kebab-case: ``learning_rate`` -> ``--learning-rate``). ``validate()`` raises ``ConfigError`` naming the
flag to fix. At the Ray boundary a config travels as ``asdict(cfg)`` and is rebuilt with ``from_dict``.
``base`` holds the machinery, ``recipes`` the ``--recipe`` defaults, ``stages`` the stage commands' configs,
``runs`` those of cv / tune / predict / evaluate.
"""

from nnunet_ray.config.base import (
    ConfigError,
    RunError,
    Stopped,
    as_field_values,
    flag_name,
    from_dict,
    opt,
    parse_duration,
)
from nnunet_ray.config.recipes import RECIPES, apply_recipe, chosen_options, with_options
from nnunet_ray.config.runs import TRIAL_FIELDS, CVConfig, EvaluateConfig, PredictConfig, TuneConfig, parse_int_list
from nnunet_ray.config.stages import MSD_MIRROR, DownloadConfig, PlanConfig, PreprocessConfig, SynthConfig
from nnunet_ray.config.train import TrainConfig, coerce_option
from nnunet_ray.config.window import SlidingWindow

__all__ = ["CVConfig", "ConfigError", "DownloadConfig", "EvaluateConfig", "MSD_MIRROR", "PlanConfig", "PredictConfig",
           "PreprocessConfig", "RECIPES", "RunError", "SlidingWindow", "Stopped", "SynthConfig", "TRIAL_FIELDS",
           "TrainConfig", "TuneConfig", "apply_recipe", "as_field_values", "chosen_options", "coerce_option",
           "flag_name", "from_dict", "opt", "parse_duration", "parse_int_list", "with_options"]
