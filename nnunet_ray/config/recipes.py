"""Training recipes (``--recipe``): named sets of defaults for the options that make up a training method.

A flag the user gives wins; an option not given takes its recipe's value. ``dle`` is NVIDIA's nnU-Net
(DeepLearningExamples), i.e. ``TrainConfig``'s own defaults; ``nnunetv2`` is nnU-Net v2's ``nnUNetTrainer``
(nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: ``initial_lr`` 1e-2, ``weight_decay`` 3e-5, SGD with Nesterov
momentum 0.99, ``PolyLRScheduler``, 250 iterations per epoch, 1000 epochs, gradient norm clipped at 12, deep
supervision as ``_build_loss`` weights it), with no early stopping (patience = its 1000 epochs).

Which options the user set is recorded in ``TrainConfig.explicit`` (the CLI fills it from the flags given), so a
config can be moved to another recipe later (a sweep over ``recipe``, a ``--config`` file naming one) and keep them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from nnunet_ray.config.base import ConfigError, flag_name

RECIPES: dict[str, dict[str, Any]] = {
    "dle": {"optimizer": "radam", "learning_rate": 1e-3, "weight_decay": 1e-4, "momentum": 0.99, "nesterov": False,
            "scheduler": "none", "train_batches": 0, "max_epochs": 10000, "patience": 100, "gradient_clip_val": 0.0,
            "deep_supervision": False, "deep_supervision_scheme": "dle"},
    "nnunetv2": {"optimizer": "sgd", "learning_rate": 1e-2, "weight_decay": 3e-5, "momentum": 0.99, "nesterov": True,
                 "scheduler": "poly", "train_batches": 250, "max_epochs": 1000, "patience": 1000,
                 "gradient_clip_val": 12.0, "deep_supervision": True, "deep_supervision_scheme": "nnunetv2"},
}
RECIPE_NAMES = tuple(RECIPES)  # each sets the same options (a test checks), so a switch of recipe resets them all


def recipe_values(recipe: str, optimizer: str | None = None) -> dict[str, Any]:
    """The options ``recipe`` sets, for ``optimizer`` (default: the recipe's own). Raises ``ConfigError`` for a
    recipe that does not exist.

    The reference passes no weight decay to SGD (``configure_optimizers``: ``FusedSGD(lr, momentum)``), so ``dle``
    with SGD has none; SGD itself honours ``--weight-decay`` when it is given.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"{flag_name('recipe')}: {recipe!r} is not one of {', '.join(RECIPES)}")
    values = dict(RECIPES[recipe])
    if recipe == "dle" and (optimizer or values["optimizer"]) == "sgd":
        values["weight_decay"] = 0.0
    return values


def apply_recipe(cfg: Any, given: Iterable[str] = ()) -> Any:
    """``cfg`` with every recipe option that is neither in ``given`` nor in ``cfg.explicit`` at ``cfg.recipe``'s
    value; ``explicit`` then records both (sorted). The CLI calls it with the flags given."""
    given = set(given) | set(cfg.explicit)
    return dataclasses.replace(_resolved(cfg, given), explicit=tuple(sorted(given)))


def _resolved(cfg: Any, keep: set[str]) -> Any:
    optimizer = cfg.optimizer if "optimizer" in keep else recipe_values(cfg.recipe)["optimizer"]
    return dataclasses.replace(cfg, **{k: v for k, v in recipe_values(cfg.recipe, optimizer).items() if k not in keep})


def chosen_options(cfg: Any) -> set[str]:
    """The options a config's user chose: those in ``explicit``, and any whose value is neither the field's default
    nor its recipe's (a config built in Python, which lists nothing in ``explicit``)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.name != "explicit"}
    recipe = recipe_values(cfg.recipe, cfg.optimizer)
    return set(cfg.explicit) | {name for name, default in defaults.items()
                                if getattr(cfg, name) not in (default, recipe.get(name, default))}


def with_options(cfg: Any, **values: Any) -> Any:
    """``cfg`` with ``values`` set as the user would set them: they and the options already chosen
    (``chosen_options``) keep their values, every other recipe option follows the (possibly new) recipe.

    ``with_options(cfg)`` alone resolves a config built in Python with a recipe but the default option values.
    ``explicit`` adds the names in ``values`` (what code such as ``cv`` sets on a config, its folds or paths, is not
    recorded as the user's).
    """
    resolved = _resolved(dataclasses.replace(cfg, **values), chosen_options(cfg) | set(values))
    return dataclasses.replace(resolved, explicit=tuple(sorted(set(cfg.explicit) | set(values))))
