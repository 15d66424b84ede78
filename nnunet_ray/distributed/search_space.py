"""A sweep's search space: training options -> choice / grid / uniform / loguniform, from flags or a YAML file.

    --learning-rate loguniform:1e-4:1e-2      --learning-rate choice:1e-3,3e-3      --patch-size 64,96,80 80,112,96

    # --search-space sweep.yaml
    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
    patch_size: {choice: [[64, 96, 80], [80, 112, 96]]}
    batch_size: {grid: [2, 4]}
    oversampling: 0.5                          # a plain value: fixed for every trial
    recipe: {grid: [dle, nnunetv2]}            # each trial takes its recipe's values for the options not given

With no search flag at all, ``tune`` sweeps the learning rate log-uniformly over a range suited to the optimizer
(``DEFAULT_LR_RANGES``: the recipe's, or ``--optimizer``'s).

Every option is a ``TrainConfig`` field; values are checked against its type here and against the data (patch sizes,
flag ranges) by ``candidates`` + ``validate_trials`` before any trial starts. Kinds map to Ray Tune's
``tune.choice`` / ``grid_search`` / ``uniform`` / ``loguniform``; with ``--search optuna`` the drawn part goes to Ray
Tune's ``OptunaSearch`` (https://docs.ray.io/en/latest/tune/api/doc/ray.tune.search.optuna.OptunaSearch.html) with a
seeded TPE sampler
(https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search.sample import Domain

from nnunet_ray.config import TRIAL_FIELDS, ConfigError, TrainConfig, TuneConfig, coerce_option, flag_name

KINDS = ("choice", "grid", "uniform", "loguniform")
NOT_SWEPT = TRIAL_FIELDS + ("dim", "address", "explicit")  # what a trial is, not how it trains
# The default sweep's learning rates, a decade either side of each optimizer's usual rate: Adam/RAdam around the
# reference's 1e-3, SGD around nnU-Net v2's 1e-2.
DEFAULT_LR_RANGES = {"radam": (1e-4, 1e-2), "adam": (1e-4, 1e-2), "sgd": (1e-3, 1e-1)}
Space = dict[str, tuple[str, list[Any]]]  # field -> (kind, values; a range's [low, high]; "value": [v])


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in NOT_SWEPT}


def _entry(name: str, kind: str, values: list[Any], where: str) -> tuple[str, list[Any]]:
    if kind not in KINDS:
        raise ConfigError(f"{where}: {name}: unknown kind {kind!r} (use one of {', '.join(KINDS)})")
    if not values:
        raise ConfigError(f"{where}: {name}: {kind} needs at least one value")
    typed = [coerce_option(name, v, where) for v in values]
    if kind in ("uniform", "loguniform"):
        if len(typed) != 2 or _fields()[name].type not in ("float", "int") or not typed[0] < typed[1]:
            raise ConfigError(f"{where}: {name}: {kind} needs [low, high] with low < high on a numeric option")
        if kind == "loguniform" and typed[0] <= 0:
            raise ConfigError(f"{where}: {name}: loguniform needs low > 0")
    return kind, typed


def parse_flag(name: str, text: str) -> tuple[str, list[Any]]:
    """``loguniform:1e-4:1e-2`` / ``choice:1e-3,3e-3`` / ``grid:...`` / ``3e-3`` for the option ``name``."""
    where = flag_name(name)
    kind, sep, rest = text.partition(":")
    if not sep:
        return "choice", [coerce_option(name, text, where)]
    values = rest.split(":") if kind in ("uniform", "loguniform") else rest.split(",")
    return _entry(name, kind, [v for v in values if v], where)


def load_space_file(path: str) -> Space:
    """The YAML search space (see the module docstring).

    Raises:
        ConfigError: the file is missing or malformed, or names an option that does not exist or cannot be swept.
    """
    import yaml

    where = flag_name("search_space")
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{where}: cannot read {path} ({str(err).splitlines()[0]})") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {path} must map training options to search spaces")
    space: Space = {}
    for name, entry in raw.items():
        if name not in _fields():
            what = "is set per trial and cannot be swept" if name in NOT_SWEPT else "is not a training option"
            raise ConfigError(f"{where}: {path}: {name!r} {what}")
        if isinstance(entry, dict):
            if len(entry) != 1:
                raise ConfigError(f"{where}: {path}: {name}: give exactly one of {', '.join(KINDS)}")
            (kind, values), = entry.items()
            space[name] = _entry(name, kind, values if isinstance(values, list) else [values], f"{where}: {path}")
        else:
            space[name] = ("choice", [coerce_option(name, entry, f"{where}: {path}")])
    return space


def search_space(cfg: TuneConfig) -> Space:
    """The sweep of ``tune``: the YAML file, then ``--learning-rate`` / ``--patch-size`` on top; with none of them,
    the learning rate, log-uniform over ``DEFAULT_LR_RANGES`` of the training options' optimizer.

    Raises:
        ConfigError: an invalid entry, or an empty space.
    """
    if not (cfg.search_space or cfg.learning_rate or cfg.patch_size):
        return {"learning_rate": ("loguniform", list(DEFAULT_LR_RANGES[cfg.train.optimizer]))}
    space = load_space_file(cfg.search_space) if cfg.search_space else {}
    if cfg.learning_rate:
        space["learning_rate"] = parse_flag("learning_rate", cfg.learning_rate)
    if cfg.patch_size:
        where = flag_name("patch_size")
        space["patch_size"] = ("choice", [coerce_option("patch_size", p, where) for p in cfg.patch_size])
    if not space:
        raise ConfigError(f"{flag_name('search_space')}: the search space is empty; sweep something with "
                          "--learning-rate, --patch-size or a --search-space file")
    return space


def candidates(space: Space) -> dict[str, list[Any]]:
    """Values to check one at a time before any trial: every choice / grid value, a range's two bounds."""
    return {name: list(values) for name, (_, values) in space.items()}


def tune_domains(space: Space) -> dict[str, Any]:
    """The space as Ray Tune domains (a single choice is a constant); tuples become lists."""
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    domains: dict[str, Any] = {}
    for name, (kind, values) in space.items():
        values = [plain(v) for v in values]
        if kind == "choice" and len(values) == 1:
            domains[name] = values[0]
        elif kind == "choice":
            domains[name] = tune.choice(values)
        elif kind == "grid":
            domains[name] = tune.grid_search(values)
        elif _fields()[name].type == "int":  # integer options draw integers in [low, high]
            domains[name] = (tune.randint if kind == "uniform" else tune.lograndint)(values[0], values[1] + 1)
        else:
            domains[name] = (tune.uniform if kind == "uniform" else tune.loguniform)(*values)
    return domains


def startup_trials(num_samples: int) -> int:
    """Random configurations TPE draws before it models the finished ones. Optuna's default (10) would leave a
    typical 8-trial nnU-Net sweep purely random: half the budget, at least 1, at most Optuna's 10."""
    return max(1, min(10, num_samples // 2))


def optuna_search(space: Space, *, seed: int, num_samples: int, metric: str,
                  mode: str) -> tuple[dict[str, Any], Any]:
    """The fixed values (for ``param_space``) and Ray Tune's ``OptunaSearch`` drawing the rest with seeded TPE.

    Raises:
        ConfigError: a grid (Optuna draws values, it cannot enumerate them) or nothing to draw.
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    grids = sorted(name for name, (kind, _) in space.items() if kind == "grid")
    if grids:
        raise ConfigError(f"{flag_name('search')}: optuna cannot grid-search {', '.join(grids)}; use choice "
                          "instead, or --search random")
    domains = tune_domains(space)
    drawn = {name: domain for name, domain in domains.items() if isinstance(domain, Domain)}
    if not drawn:
        raise ConfigError(f"{flag_name('search')}: optuna has nothing to draw ({', '.join(sorted(space))} fixed); "
                          "give a range or a choice of several values")
    with warnings.catch_warnings():
        # Patch sizes (lists) as choices are fine in the in-memory study OptunaSearch keeps and pickles with the
        # experiment; Optuna warns only because a database storage could not hold them.
        warnings.filterwarnings("ignore", "Choices for a categorical distribution", UserWarning)
        distributions = OptunaSearch.convert_search_space({"sweep": drawn})
    # constant_liar: trials still running count as bad guesses, so parallel trials do not all draw one point.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples), constant_liar=True)
    searcher = OptunaSearch(space=distributions, metric=metric, mode=mode, sampler=sampler)
    return {name: value for name, value in domains.items() if name not in drawn}, searcher
