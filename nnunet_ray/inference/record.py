"""``predict.json``: which ensemble and options made a prediction folder, and which of its cases are done.

The driver writes it before the first case (members and their hashes, the options, the cases it sets out to
predict) and again as each case's outputs land, so a folder never holds outputs its record does not account for,
even when a run is killed. A rerun adds to a folder only when its record has the same identity: the members'
network, preprocessing and weights hashes, the options in ``SAME_RESULT_OPTIONS`` and the post-processing classes.
A case is done when the record says so, its image files are unchanged and all its outputs are there.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nnunet_ray.data import storage
from nnunet_ray.data.inputs import input_fingerprint
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.inference.outputs import LABEL_SUFFIX, PROBS_SUFFIX, output_names

RECORD = "predict.json"
VERSION = 2  # 1: written once at the end of a run, no weights hashes, no planned cases
SAME_RESULT_OPTIONS = ("tta", "amp", "overlap", "blend", "postprocess")  # options that change the predictions
MEMBER_IDENTITY = ("network_hash", "preprocessing_hash", "weights_hash")  # what makes two members the same network


def weights_hash(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values: equal exactly when the weights are (a
    retrained fold in the same folder is another member)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, whatever the dtype
    return digest.hexdigest()[:16]


def is_prediction_file(name: str) -> bool:
    """Whether a file name in a prediction folder is a prediction (a label map or probabilities), not a temporary,
    the record or an evaluation summary."""
    return not name.startswith(".") and name.endswith((LABEL_SUFFIX, ".nii", PROBS_SUFFIX))


@dataclass
class PredictRecord:
    """The content of ``predict.json``.

    Attributes:
        members: per member its location, network / preprocessing / weights hashes, dim, fold, dataset.
        options: the run's ``PredictConfig`` as a dict.
        largest_component: classes post-processing keeps the largest component of.
        n_classes: output classes, background included.
        labels: class index (a string) -> name; ``nnunet-ray evaluate`` names its classes from it.
        planned: every case a run into this folder set out to predict (recorded before its first case).
        cases: case id -> ``{"status": "done" | "failed", "seconds", "error", "inputs": input_fingerprint}``.
        actors, seconds: the pool size and wall time of the last run.
    """

    members: list[dict]
    options: dict
    largest_component: list[int]
    n_classes: int
    labels: dict[str, str]
    planned: list[str] = field(default_factory=list)
    cases: dict[str, dict] = field(default_factory=dict)
    actors: int = 0
    seconds: float = 0.0
    version: int = VERSION

    def identity(self) -> dict[str, Any]:
        """What must be equal for two runs to write into one folder (member order does not matter)."""
        return {"members": sorted(tuple(str(m.get(k)) for k in MEMBER_IDENTITY) for m in self.members),
                **{k: self.options.get(k) for k in SAME_RESULT_OPTIONS},
                "largest_component": sorted(self.largest_component)}

    def differences(self, other: PredictRecord) -> list[str]:
        """The identity entries (``members``, option names, ``largest_component``) in which ``other`` differs."""
        mine, theirs = self.identity(), other.identity()
        return [k for k in mine if mine[k] != theirs[k]]

    def is_done(self, case: CaseFiles, present: Iterable[str], *, save_probabilities: bool,
                fingerprint_of: Callable[[CaseFiles], list | None] = input_fingerprint) -> bool:
        """Recorded as done from the same image files, and every output file is in ``present`` (the folder).
        ``fingerprint_of`` gives the images' fingerprint now (default: ``stat`` them; on object storage: a listing)."""
        entry = self.cases.get(case.case_id, {})
        fingerprint = fingerprint_of(case)
        return (entry.get("status") == "done" and fingerprint is not None and entry.get("inputs") == fingerprint
                and set(output_names(case.case_id, save_probabilities=save_probabilities)) <= set(present))

    def output_names(self) -> set[str]:
        """Every file name an output of a case it names (planned or recorded) may have."""
        ids = {*self.planned, *self.cases}
        return {name for case_id in ids for name in output_names(case_id, save_probabilities=True)}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> PredictRecord:
        """Raises ValueError for content that is not a record."""
        if not isinstance(data, dict) or not isinstance(data.get("members"), list) \
                or not isinstance(data.get("options"), dict):
            raise ValueError("not a prediction record (no members or options)")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("version", 1)
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"not a prediction record ({exc})") from exc


def read_record(out: str) -> PredictRecord | None:
    """The record of the prediction folder ``out`` (a path or URI); None when it has none.

    Raises:
        ValueError: the file is not readable JSON or not a record.
    """
    location = storage.join(out, RECORD)
    if not storage.is_file(location):
        return None
    try:
        return PredictRecord.from_json(storage.read_json(location))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read {storage.display(location)}: {str(exc).splitlines()[0]}") from exc


def write_record(out: str, record: PredictRecord) -> None:
    """Write ``record`` into the prediction folder ``out`` atomically."""
    storage.write_json(storage.join(out, RECORD), record.to_json())
