"""``plans.json`` as a typed, versioned object: the one place plans are built from JSON, saved, migrated and hashed.

    plans = load_plans("PRE/Task04_Hippocampus/3d")           # Plans, migrated from older files
    plans.patch_size, plans.kernels, plans.normalization.channels
    plans.preprocessing_hash   # what the arrays depend on: <case>.json records it
    plans.network_hash         # what the weights depend on: checkpoints are compared by it
    bigger = with_patch_size(plans, (64, 64, 64))              # same topology rule, new kernels/strides/filters
    save_plans(folder, bigger)

Versions of the file:
  1  (no ``version`` key) one ``hash`` over every key; ``normalization.scheme`` (channel 0's) beside ``channels``;
     ``min_fmap`` / ``max_depth`` not stored. Loaded with a warning, assuming the defaults 4 / 6.
  2  ``version``, ``min_fmap``, ``max_depth``; ``preprocessing_hash`` and ``network_hash`` instead of ``hash``.
A file with a newer version than ``PLANS_VERSION`` is refused: guessing what it means could corrupt work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_ray.data import storage

logger = logging.getLogger(__name__)

PLANS_VERSION = 2
PLANS_FILE = "plans.json"
DEFAULT_MIN_FMAP = 4  # the reference's get_unet_params defaults, assumed for version-1 files
DEFAULT_MAX_DEPTH = 6
# The fields each hash covers: a field added to Plans changes neither hash until it is listed here.
PREPROCESSING_FIELDS = ("dim", "in_channels", "n_classes", "spacing", "patch_size", "normalization")
NETWORK_FIELDS = ("dim", "in_channels", "n_classes", "kernels", "strides", "filters")


class PlansError(ValueError):
    """A plans file is unreadable, incomplete or from a newer version; the message names the file."""


class PlansNotFoundError(FileNotFoundError, PlansError):
    """A folder has no plans.json (catchable as FileNotFoundError or ValueError)."""


@dataclass(frozen=True)
class Normalization:
    """How each input channel is normalised (NVIDIA nnU-Net ``data_preprocessing/preprocessor.py::normalize``).

    Attributes:
        channels: ``"ct"`` (clip to [ct_min, ct_max], z-score with the dataset's statistics), ``"mri"``
            (per-channel z-score over nonzero voxels), or nnU-Net v2's ``"nonorm"``, ``"rescale_to_0_1"``,
            ``"rgb_to_0_1"``; one per input channel.
        ct_min, ct_max, ct_mean, ct_std: Hounsfield-unit statistics of the first CT channel's foreground voxels;
            None without CT.
        more_ct: ``(channel, min, max, mean, std)`` of every further CT channel (multi-phase CT: each phase keeps
            its own statistics, as nnU-Net v2 keeps them per channel); empty with one CT channel, and then left out
            of plans.json and of the preprocessing hash, so plans from before it read and hash as they did.
    """

    channels: tuple[str, ...]
    ct_min: float | None = None
    ct_max: float | None = None
    ct_mean: float | None = None
    ct_std: float | None = None
    more_ct: tuple[tuple[int, float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        object.__setattr__(self, "more_ct", tuple((int(c), *map(float, rest)) for c, *rest in self.more_ct))

    def ct_statistics(self, channel: int) -> tuple[float | None, float | None, float | None, float | None]:
        """(min, max, mean, std) that CT channel ``channel`` is clipped and z-scored with."""
        for c, *stats in self.more_ct:
            if c == channel:
                return stats[0], stats[1], stats[2], stats[3]
        return self.ct_min, self.ct_max, self.ct_mean, self.ct_std

    def to_json(self) -> dict[str, Any]:
        """Its plans.json object (``more_ct`` only when there is some)."""
        data = dataclasses.asdict(self)
        return data if self.more_ct else {k: v for k, v in data.items() if k != "more_ct"}


@dataclass(frozen=True)
class Plans:
    """Everything the preprocessor, loader and model need for one dataset and dimensionality.

    Attributes:
        dataset: the dataset's name (its folder name).
        dim: 2 or 3.
        modalities: channel names from dataset.json, e.g. ``("MRI",)``.
        in_channels: input channels (``len(modalities)``).
        n_classes: classes, background included.
        labels: class index (as a string, JSON keys) -> name.
        spacing: target spacing ``(z, y, x)`` mm; in 2D, z is informational (each case keeps its own).
        patch_size: ``(Z, Y, X)`` or ``(Y, X)`` voxels.
        kernels, strides: per level, ``dim`` ints each (``strides[0]`` all ones: the input block).
        filters: channels per level.
        normalization: per-channel schemes and CT statistics.
        anisotropic_axis: the data's coarse axis (median spacing ratio >= 3), or None.
        preset: ``"msd"`` (the reference's task presets) or ``"auto"`` (planned from the fingerprint).
        min_fmap, max_depth: the topology rule's parameters, kept so ``with_patch_size`` can re-derive it.
        version: the file format version (``PLANS_VERSION`` for plans this code writes).
    """

    dataset: str
    dim: int
    modalities: tuple[str, ...]
    in_channels: int
    n_classes: int
    labels: Mapping[str, str]
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    filters: tuple[int, ...]
    normalization: Normalization
    anisotropic_axis: int | None = None
    preset: str = "auto"
    min_fmap: int = DEFAULT_MIN_FMAP
    max_depth: int = DEFAULT_MAX_DEPTH
    version: int = PLANS_VERSION

    def __post_init__(self) -> None:
        # JSON and callers hand in lists; store tuples so a Plans compares, prints and never changes the same way.
        coerce = {"modalities": tuple(str(m) for m in self.modalities),
                  "labels": {str(k): str(v) for k, v in self.labels.items()},
                  "spacing": tuple(float(s) for s in self.spacing),
                  "patch_size": tuple(int(p) for p in self.patch_size),
                  "kernels": tuple(tuple(int(k) for k in level) for level in self.kernels),
                  "strides": tuple(tuple(int(s) for s in level) for level in self.strides),
                  "filters": tuple(int(f) for f in self.filters)}
        for name, value in coerce.items():
            object.__setattr__(self, name, value)

    @property
    def topology_spacing(self) -> tuple[float, ...]:
        """The spacing the topology rule works on: the last ``dim`` axes (2D: the in-plane preset spacing)."""
        return self.spacing[-self.dim:]

    @property
    def preprocessing_hash(self) -> str:
        """16 hex digits over ``PREPROCESSING_FIELDS``: equal hashes mean interchangeable preprocessed arrays."""
        return _digest(self, PREPROCESSING_FIELDS)

    @property
    def network_hash(self) -> str:
        """16 hex digits over ``NETWORK_FIELDS``: equal hashes mean the same network shape (state dicts fit)."""
        return _digest(self, NETWORK_FIELDS)

    def to_json(self) -> dict[str, Any]:
        """The plans.json content: every field, plus both hashes for readers of the file."""
        return {**dataclasses.asdict(self), "normalization": self.normalization.to_json(),
                "preprocessing_hash": self.preprocessing_hash, "network_hash": self.network_hash}


def _digest(plans: Plans, names: Sequence[str]) -> str:
    content = {name: _plain(getattr(plans, name)) for name in names}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """JSON-equal form of a field: dataclasses as dicts (their own ``to_json`` when they have one), tuples as lists."""
    if callable(getattr(value, "to_json", None)):
        value = value.to_json()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value))


def _migrate_v1(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Version 1 -> 2: drop the one ``hash``, per-channel schemes from ``scheme``, the rule's default parameters."""
    data = {k: v for k, v in data.items() if k != "hash"}
    norm = dict(data.get("normalization") or {})
    scheme = norm.pop("scheme", None)
    norm.setdefault("channels", [scheme] * int(data.get("in_channels", 1)))
    data["normalization"] = norm
    data.setdefault("min_fmap", DEFAULT_MIN_FMAP)
    data.setdefault("max_depth", DEFAULT_MAX_DEPTH)
    data["version"] = PLANS_VERSION
    logger.warning("%s: plans written before version %d; migrated (min_fmap %d, max_depth %d assumed). Rerun "
                   "`nnunet-ray plan` to write the current format.", source, PLANS_VERSION, data["min_fmap"],
                   data["max_depth"])
    return data


def plans_from_json(data: Mapping[str, Any], *, source: str = "plans") -> Plans:
    """Build ``Plans`` from plans.json content, migrating older versions (with a logged warning).

    Args:
        data: the parsed JSON object (``Plans.to_json()`` output, or an older file's content).
        source: what to name in messages (the file path).

    Returns:
        the plans, at ``PLANS_VERSION``.

    Raises:
        PlansError: not a plans object, a required key is missing, or the version is newer than this code.
    """
    if not isinstance(data, Mapping):
        raise PlansError(f"{source}: not a plans file (a JSON object is expected)")
    version = data.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise PlansError(f"{source}: plans version {version!r} is not a positive integer")
    if version > PLANS_VERSION:
        raise PlansError(f"{source}: plans version {version} is newer than this nnunet_ray reads ({PLANS_VERSION}); "
                         "upgrade nnunet_ray or rerun `nnunet-ray plan`")
    values = _migrate_v1(dict(data), source) if version == 1 else dict(data)
    fields = {f.name: f for f in dataclasses.fields(Plans)}
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in values]
    if missing:
        raise PlansError(f"{source}: not a plans file (missing {', '.join(missing)})")
    try:
        values["normalization"] = Normalization(**values["normalization"])
        return Plans(**{n: v for n, v in values.items() if n in fields})
    except (TypeError, ValueError, AttributeError) as err:
        raise PlansError(f"{source}: malformed plans ({err})") from err


def load_plans(folder: str | Path) -> Plans:
    """Read ``folder/plans.json`` (a hand-edited file is fine: both hashes are recomputed from the content).

    Args:
        folder: a preprocessed folder ``<root>/<dataset>/<2d|3d>/`` or a checkpoint folder, a path or a URI.

    Returns:
        the plans.

    Raises:
        PlansNotFoundError: no plans.json in ``folder``.
        PlansError: not valid JSON, a missing key, or a newer version.
    """
    location = storage.join(folder, PLANS_FILE)
    try:
        text = storage.read_text(location)
    except FileNotFoundError as err:
        raise PlansNotFoundError(f"no plans.json in {storage.display(folder)}: run `nnunet-ray plan` "
                                 "(or preprocess) first") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PlansError(f"{storage.display(location)}: not valid JSON ({err})") from err
    return plans_from_json(data, source=storage.display(location))


def save_plans(folder: str | Path, plans: Plans) -> str:
    """Write ``folder/plans.json`` (a path or a URI) atomically, the folder created; returns its location."""
    location = storage.join(folder, PLANS_FILE)
    storage.write_json(location, plans.to_json())
    return location
