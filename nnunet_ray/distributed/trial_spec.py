"""What a trial of a ``cv`` / ``tune`` experiment is: its options (``TrialSpec``), its name, and the resources it
holds and declares to Ray Tune."""

from __future__ import annotations

import dataclasses
from typing import Any

from ray import tune

from nnunet_ray.config import (
    TRIAL_FIELDS,
    ConfigError,
    TrainConfig,
    as_field_values,
    flag_name,
    from_dict,
    parse_int_list,
    with_options,
)
from nnunet_ray.data import storage
from nnunet_ray.data.records import RecordError, check_record
from nnunet_ray.distributed.cluster import DRIVER_RESOURCE
from nnunet_ray.distributed.hparams import short_value
from nnunet_ray.runs.names import fold_run_name

DRIVER_CPUS = 0.1  # what a Ray Train trial's driver function holds; its Train workers ask for that much less


SPEC_FILE = "experiment.json"  # the trials' shared options, written when an experiment starts; --resume reads it
SPEC_VERSION = 1  # files from before the version key read as 1


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """What differs between trials: the grid over dims and folds and the swept training options."""

    base: TrainConfig  # absolute paths or URIs; results = the experiment folder
    data_dirs: dict[int, str]  # preprocessed folder per dim
    dims: tuple[int, ...]
    folds: tuple[int, ...]
    sweep: dict[str, Any] = dataclasses.field(default_factory=dict)  # field -> value or Tune domain
    engine: str = "auto"  # --engine: "tune" / "train", or "auto" (tune for one worker)
    budget: str = ""  # tune --budget (HH:MM:SS), recorded so --resume can refuse another

    @property
    def in_trial(self) -> bool:
        """Whether each fold trains inside its Tune trial (``trial_fit``) rather than on Ray Train workers."""
        return self.engine == "tune" or (self.engine == "auto" and self.base.world_size == 1)

    def param_space(self) -> dict[str, Any]:
        """Tune's search space: the grid over dims and folds, and the swept options (a dict of domains)."""
        return {"dim": _grid(self.dims), "fold": _grid(self.folds), "sweep": dict(self.sweep)}

    def to_json(self) -> dict[str, Any]:
        """What ``--resume`` rebuilds the trials from (``RESULTS/NAME/experiment.json``); not the sweep."""
        return {"base": dataclasses.asdict(self.base), "data_dirs": {str(d): p for d, p in self.data_dirs.items()},
                "dims": list(self.dims), "folds": list(self.folds), "engine": self.engine, "budget": self.budget,
                "version": SPEC_VERSION}

    @classmethod
    def from_json(cls, values: Any, *, source: str = SPEC_FILE) -> "TrialSpec":
        """Raises RecordError: not an experiment spec, or of a newer version (naming ``source``)."""
        values = check_record(values, current=SPEC_VERSION, source=source, what="experiment spec")
        try:
            return cls(base=from_dict(TrainConfig, values["base"]),
                       data_dirs={int(d): p for d, p in values["data_dirs"].items()},
                       dims=tuple(values["dims"]), folds=tuple(values["folds"]), engine=values.get("engine", "auto"),
                       budget=values.get("budget", ""))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RecordError(f"{source}: not an experiment spec ({type(err).__name__}: {err})") from err


def _grid(values: tuple[int, ...]) -> Any:
    """One value is a constant: a searcher such as OptunaSearch accepts no grid in ``param_space``."""
    return values[0] if len(values) == 1 else tune.grid_search(list(values))


def trial_config(config: dict, spec: TrialSpec) -> TrainConfig:
    """The ``TrainConfig`` of one trial: the shared options with its dim, fold and swept values. The swept values
    count as given (``explicit``); a swept ``recipe`` (or ``optimizer``) resolves the options nobody chose anew."""
    dim = int(config["dim"])
    base = dataclasses.replace(spec.base, dim=dim, fold=int(config["fold"]), data=spec.data_dirs[dim])
    return with_options(base, **as_field_values(config["sweep"]))


ABBREVIATIONS = {"learning_rate": "lr", "patch_size": "patch", "batch_size": "bs", "weight_decay": "wd", "recipe": ""}


def trial_name(trial: Any) -> str:
    """``3d_fold0`` for a CV trial; a sweep trial adds its values and Tune's trial id (stable over restores), so
    two trials never share a run folder and a restored sweep finds each trial's own run."""
    config = trial.config
    parts = [fold_run_name(int(config["dim"]), int(config["fold"]))]
    if config["sweep"]:
        parts += [f"{ABBREVIATIONS.get(k, k)}{short_value(v)}" for k, v in sorted(config["sweep"].items())]
        parts.append(trial.trial_id)
    return "_".join(parts)



# ----------------------------------------------------------------------------------------------- resources

def trial_resources(cfg: TrainConfig) -> dict[str, float]:
    """What one trial holds while it trains: its workers' CPUs (the driver's share included) and GPUs."""
    return {"CPU": float(cfg.world_size * cfg.cpus_per_worker), "GPU": float(cfg.gpus)}


def max_concurrent_trials(per_trial: dict[str, float], cluster: dict[str, float]) -> int:
    """How many trials fit in the cluster at once (Tune cannot see the Train workers, so this caps it).

    Raises:
        ConfigError: one trial needs more than the whole cluster has.
    """
    fits = [int(cluster.get(kind, 0.0) // need) for kind, need in per_trial.items() if need > 0]
    if min(fits) < 1:
        have = ", ".join(f"{cluster.get(k, 0):g} {k}" for k in per_trial if per_trial[k] > 0)
        want = ", ".join(f"{v:g} {k}" for k, v in per_trial.items() if v > 0)
        raise ConfigError(f"{flag_name('workers_per_trial')}: a trial needs {want} but the cluster has {have}; "
                          f"lower --workers-per-trial / --gpus-per-trial / --cpus-per-worker")
    return min(fits)


def declared_resources(spec: TrialSpec, cluster: dict[str, float] | None = None) -> dict[str, float]:
    """What each trial declares to Tune: its device(s) when the fold trains in the trial (a GPU, a fraction of one,
    or CPUs); else the driver's small CPU share (its Ray Train workers reserve their own). On a cluster whose
    on-demand head advertises ``DRIVER_RESOURCE`` (cluster.yaml), a Ray Train trial's driver, and so its Train
    controller, which Ray places on the driver's node, runs there instead, never on a spot worker."""
    if spec.in_trial:
        return {"cpu": float(spec.base.cpus_per_worker), "gpu": float(spec.base.gpus)}
    if DRIVER_RESOURCE in (cluster or {}):
        return {"cpu": 0.0, DRIVER_RESOURCE: 1.0}
    return {"cpu": DRIVER_CPUS}


def check_resume_options(cfg: Any, spec: TrialSpec) -> None:
    """``--resume`` continues with exactly the options the experiment started with: a flag given on the resume with
    another value than the experiment's would be silently ignored, so it is refused, naming every such flag.

    Args:
        cfg: the ``CVConfig`` / ``TuneConfig`` of the resume (its ``train`` with any ``--config`` file applied).
        spec: the experiment's own options (``experiment.json``).

    Raises:
        ConfigError: naming the flags whose values differ, with the experiment's values.
    """
    defaults, fixed = TrainConfig(), set(TRIAL_FIELDS) | {"address", "dim", "explicit"}
    given = {f.name: getattr(cfg.train, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in fixed
             and getattr(cfg.train, f.name) != getattr(defaults, f.name)}
    theirs = {name: getattr(spec.base, name) for name in given}
    given |= _trial_shape(cfg, type(cfg)())
    theirs |= {"dims": spec.dims, "folds": spec.folds, "gpus_per_trial": spec.base.gpus,
               "workers_per_trial": spec.base.workers, "engine": spec.engine, "budget": spec.budget}
    changed = [f"{flag_name(name)} {_shown(value)} (the experiment's: {_shown(theirs[name])})"
               for name, value in given.items() if value != theirs[name]]
    if changed:
        raise ConfigError(f"{flag_name('resume')}: continues with the experiment's own options; these differ: "
                          f"{'; '.join(changed)}. Drop them, or start a new experiment with --name")


def _trial_shape(cfg: Any, defaults: Any) -> dict[str, Any]:
    """The grid and resource flags given with values other than their defaults (``dims`` / ``folds`` parsed)."""
    shape: dict[str, Any] = {}
    for name in ("dims", "folds", "gpus_per_trial", "workers_per_trial", "engine", "budget"):
        value = getattr(cfg, name, None)
        if value is not None and value != getattr(defaults, name):
            shape[name] = parse_int_list(value, name) if name in ("dims", "folds") else value
    return shape


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value) or "none"


# ----------------------------------------------------------------------------------------------- its folder

def check_experiment_folder(path: str, *, resume: bool) -> None:
    """A Tune run name that exists silently resumes: refuse that without ``--resume``, and a resume of nothing.

    Args:
        path: the experiment folder, a path or URI.

    Raises:
        ConfigError: naming --name / --resume.
    """
    exists = storage.is_file(storage.join(path, "tuner.pkl")) and storage.is_file(storage.join(path, SPEC_FILE))
    name, parent = storage.basename(path), storage.display(storage.parent(path))
    if exists and not resume:
        raise ConfigError(f"{flag_name('name')}: experiment {name!r} already exists in {parent}; pass "
                          "--resume to continue it or --name NEW to start another")
    if resume and not exists:
        raise ConfigError(f"{flag_name('resume')}: no experiment {name!r} in {parent} to resume")


def experiment_folder(results: str, name: str) -> str:
    """``RESULTS/NAME``: an absolute path, or a URI (credentials and options kept for the workers)."""
    return storage.join(storage.absolute(results), name)


def load_spec(path: str) -> TrialSpec:
    """The trial spec an experiment was started with (``--resume`` continues with exactly these options)."""
    location = storage.join(path, SPEC_FILE)
    return TrialSpec.from_json(storage.read_json(location), source=storage.display(location))


def resume_hint(path: str) -> str:
    """How to continue the experiment at ``path``."""
    return f"--resume --name {storage.basename(path)} --results {storage.display(storage.parent(path))}"
