"""``<experiment>/best_configuration.json``: what cross-validation chose (``evaluate --cv``), as nnU-Net v2's
``find_best_configuration`` does: the configuration (2D, 3D or their ensemble) with the highest mean CV Dice, and
the classes that keep only their largest connected component. ``predict --models <experiment>`` follows it.

Files from before the ``version`` key read as version 1; a newer version is refused with the file named.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_ray.data import storage
from nnunet_ray.data.records import RecordError, check_record, read_record

BEST_CONFIGURATION_FILE = "best_configuration.json"
BEST_CONFIGURATION_VERSION = 1



@dataclass(frozen=True)
class BestConfiguration:
    """The chosen configuration of an experiment.

    Attributes:
        configuration: its name, ``"3d"``, ``"2d"`` or ``"2d+3d"`` (probabilities averaged).
        dims: the dims whose fold models predict.
        mean_dice: every candidate's mean Dice over the CV cases.
        largest_component: classes that keep only their largest connected component (``predict --postprocess``).
        dice_postprocessed: the chosen configuration's mean Dice after that step.
    """

    configuration: str
    dims: tuple[int, ...]
    mean_dice: dict[str, float]
    largest_component: tuple[int, ...]
    dice_postprocessed: float
    version: int = BEST_CONFIGURATION_VERSION

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dims": list(self.dims), "largest_component": list(self.largest_component)}

    @classmethod
    def from_json(cls, data: Any, *, source: str = BEST_CONFIGURATION_FILE) -> BestConfiguration:
        """Raises RecordError: not an object, a key missing or of the wrong kind, or a newer version."""
        data = check_record(data, current=BEST_CONFIGURATION_VERSION, source=source, what="best configuration")
        try:
            return cls(configuration=str(data["configuration"]), dims=tuple(int(d) for d in data["dims"]),
                       mean_dice={str(k): float(v) for k, v in data["mean_dice"].items()},
                       largest_component=tuple(int(c) for c in data["largest_component"]),
                       dice_postprocessed=float(data["dice_postprocessed"]))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RecordError(f"{source}: not a best configuration ({type(err).__name__}: {err})") from err


def best_configuration_location(experiment: str | Path) -> str:
    """An experiment folder's best_configuration.json (path or URI)."""
    return storage.join(experiment, BEST_CONFIGURATION_FILE)


def save_best_configuration(experiment: str | Path, best: BestConfiguration) -> None:
    """Write ``<experiment>/best_configuration.json`` (path or URI) atomically."""
    storage.write_json(best_configuration_location(experiment), best.to_json())


def load_best_configuration(experiment: str | Path) -> BestConfiguration | None:
    """The experiment's chosen configuration (path or URI), or None when cross-validation has not chosen.

    Raises:
        RecordError: the file is there but is not a valid record.
    """
    try:
        data, source = read_record(best_configuration_location(experiment))
    except FileNotFoundError:
        return None
    return BestConfiguration.from_json(data, source=source)
