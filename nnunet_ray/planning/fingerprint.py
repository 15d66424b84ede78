"""Dataset fingerprint: per-case geometry and foreground intensities, merged into ``fingerprint.json``.

``case_fingerprint`` is the per-case map step (Ray Data runs it over the cluster); it never raises for a
bad case. ``merge_fingerprints`` reduces the records into a ``DatasetFingerprint``: per-case lists, medians and
per-channel intensity statistics pooled over the sampled foreground voxels (label > 0) of the raw, non-resampled
images. Planning reads it; preprocessing writes it beside plans.json and reads it back to size its actors.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ray.data import storage
from nnunet_ray.data.geometry import nonzero_box
from nnunet_ray.data.nifti import read_case
from nnunet_ray.data.records import RecordError, check_record, read_record
from nnunet_ray.data.types import CaseError, CaseFiles, DatasetError, DatasetInfo

FINGERPRINT_FILE = "fingerprint.json"  # the merged fingerprint, beside plans.json
FINGERPRINT_VERSION = 1
Triple = tuple[float, float, float]


@dataclass(frozen=True)
class DatasetFingerprint:
    """``fingerprint.json``: what planning needs to know about a dataset's training cases.

    Attributes:
        dataset: the dataset's name.
        spacings, shapes, cropped_shapes: per case (sorted by case id), ``(z, y, x)`` in mm / voxels; cropped is
            the nonzero box.
        case_ids, modalities: the cases fingerprinted and the channels' modalities.
        intensity: per channel, ``intensity_stats`` of the pooled foreground samples (CT normalisation).
        failed: ``{"case_id", "error"}`` of the cases left out.
    """

    dataset: str
    spacings: tuple[Triple, ...]
    cropped_shapes: tuple[Triple, ...]
    shapes: tuple[Triple, ...] = ()
    case_ids: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    intensity: tuple[dict[str, Any], ...] = ()
    failed: tuple[dict[str, str], ...] = ()
    version: int = FINGERPRINT_VERSION

    @property
    def n_cases(self) -> int:
        return len(self.spacings)

    @property
    def median_spacing(self) -> list[float]:
        """``[z, y, x]`` mm, the median over cases of each axis."""
        return _median(self.spacings)

    def to_json(self) -> dict[str, Any]:
        """The file's content: the fields, plus the case count and medians for a reader's eye."""
        content: dict[str, Any] = json.loads(json.dumps({
            **dataclasses.asdict(self), "n_cases": self.n_cases, "median_spacing": self.median_spacing,
            "median_shape": _median(self.shapes), "median_cropped_shape": _median(self.cropped_shapes)}))
        return content

    @classmethod
    def from_json(cls, data: Any, *, source: str = FINGERPRINT_FILE) -> DatasetFingerprint:
        """The fingerprint in ``data`` (a parsed fingerprint.json); the derived keys are recomputed, not read.

        Raises:
            RecordError: naming ``source``: not an object, a newer version, a missing key or a malformed value.
        """
        values = check_record(data, current=FINGERPRINT_VERSION, source=source, what="dataset fingerprint")
        try:
            return cls(dataset=str(values["dataset"]), spacings=_triples(values["spacings"], float),
                       cropped_shapes=_triples(values["cropped_shapes"], int),
                       shapes=_triples(values.get("shapes", ()), int),
                       case_ids=tuple(map(str, values.get("case_ids", ()))),
                       modalities=tuple(map(str, values.get("modalities", ()))),
                       intensity=tuple(dict(c) for c in values.get("intensity", ())),
                       failed=tuple(dict(f) for f in values.get("failed", ())))
        except (KeyError, TypeError, ValueError) as err:
            raise RecordError(f"{source}: not a dataset fingerprint ({type(err).__name__}: {err})") from err


def _median(rows: Sequence[Triple]) -> list[float]:
    """Each axis's median over the cases (``[]`` for none)."""
    return [float(v) for v in np.median(np.asarray(rows, dtype=np.float64), axis=0)] if rows else []


def _triples(rows: Sequence[Sequence[Any]], kind: type) -> tuple[Triple, ...]:
    triples = tuple(tuple(kind(v) for v in row) for row in rows)
    if any(len(t) != 3 for t in triples):
        raise ValueError("a per-case entry is not (z, y, x)")
    return triples


def save_fingerprint(folder: str | Path, fingerprint: DatasetFingerprint) -> str:
    """Write ``<folder>/fingerprint.json`` (a path or URI); returns its location."""
    location = storage.join(folder, FINGERPRINT_FILE)
    storage.write_json(location, fingerprint.to_json())
    return location


def load_fingerprint(folder: str | Path) -> DatasetFingerprint:
    """``<folder>/fingerprint.json`` (a path or URI).

    Raises:
        FileNotFoundError: there is none.
        RecordError: it is not JSON or not a fingerprint, naming the file.
    """
    data, source = read_record(storage.join(folder, FINGERPRINT_FILE))
    return DatasetFingerprint.from_json(data, source=source)


def cropped_shape(image: np.ndarray) -> list[int]:
    """Shape of the nonzero box (the whole volume when every voxel is zero: preprocessing reports that case)."""
    try:
        return [hi - lo for lo, hi in nonzero_box(image)]
    except ValueError:
        return [int(n) for n in image.shape[1:]]


def _case_rng(case_id: str, seed: int) -> np.random.Generator:
    # Mixing the case id in keeps each case's draw independent yet the same on every worker and rerun.
    return np.random.default_rng([seed, zlib.crc32(case_id.encode())])


def _fingerprint(case: CaseFiles, max_samples: int, seed: int) -> dict[str, Any]:
    if case.label is None:
        raise CaseError(case.case_id, "has no label file; the fingerprint needs labelled training cases")
    image, label = read_case(case)
    assert label is not None  # read_case returns a label whenever case.label is set
    foreground = label.array[0] > 0  # (Z, Y, X)
    values = image.array[:, foreground]  # (C, N) raw intensities under the label
    if values.shape[1] > max_samples:
        picked = _case_rng(case.case_id, seed).choice(values.shape[1], size=max_samples, replace=False)
        values = values[:, np.sort(picked)]
    return {
        "case_id": case.case_id,
        "spacing": [float(s) for s in image.spacing],
        "shape": list(image.shape),
        "cropped_shape": cropped_shape(image.array),
        "intensity_samples": values.astype(np.float64).tolist(),
        "error": None,
    }


def case_fingerprint(case: CaseFiles, *, max_samples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Geometry and sampled foreground intensities of one labelled case.

    Args:
        case: the case's image and label files.
        max_samples: at most this many foreground voxels are kept per channel (the same voxels in
            every channel), drawn without replacement by an RNG seeded from ``seed`` and the case id.
        seed: sampling seed; the same seed gives the same samples.

    Returns:
        ``{"case_id", "spacing": [z, y, x] mm, "shape": [Z, Y, X], "cropped_shape": [Z, Y, X] of the
        box of voxels nonzero in any channel, "intensity_samples": one list of floats per channel,
        "error": None}``; for a case that cannot be read, ``{"case_id", "error": "<case_id>: problem"}``.

    Raises:
        ValueError: ``max_samples`` < 1 (a programming error, not a bad case).
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    try:
        return _fingerprint(case, max_samples, seed)
    except CaseError as err:
        return {"case_id": case.case_id, "error": str(err)}
    except Exception as err:  # noqa: BLE001 - any failure to read a file is this case's problem only
        return {"case_id": case.case_id, "error": f"{case.case_id}: {type(err).__name__}: {err}"}


def intensity_stats(samples: np.ndarray) -> dict[str, Any]:
    """Summary statistics of pooled foreground intensities of one channel.

    Args:
        samples: 1D array of intensities.

    Returns:
        ``{"n_samples", "mean", "std" (population), "min", "max", "median", "percentile_00_5",
        "percentile_99_5"}``; all but ``n_samples`` are None when there are no samples.
    """
    keys = ("mean", "std", "min", "max", "median", "percentile_00_5", "percentile_99_5")
    if samples.size == 0:
        return {"n_samples": 0, **{k: None for k in keys}}
    values = (samples.mean(), samples.std(), samples.min(), samples.max(), np.median(samples),
              np.percentile(samples, 0.5), np.percentile(samples, 99.5))
    return {"n_samples": int(samples.size), **{k: float(v) for k, v in zip(keys, values)}}


def _split_records(dataset: DatasetInfo,
                   records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n_channels = len(dataset.modalities)
    good, failed = [], []
    for record in records:
        case_id = record["case_id"]
        if record.get("error"):
            failed.append({"case_id": case_id, "error": record["error"]})
        elif len(record["intensity_samples"]) != n_channels:
            problem = f"has {len(record['intensity_samples'])} image channels, dataset.json lists {n_channels}"
            failed.append({"case_id": case_id, "error": str(CaseError(case_id, problem))})
        else:
            good.append(record)
    return sorted(good, key=lambda r: r["case_id"]), sorted(failed, key=lambda r: r["case_id"])


def merge_fingerprints(dataset: DatasetInfo, records: list[dict[str, Any]]) -> DatasetFingerprint:
    """Reduce per-case records into the dataset fingerprint (the content of ``fingerprint.json``).

    Args:
        dataset: the dataset the records belong to (its channel count is checked).
        records: ``case_fingerprint`` outputs, in any order; errored ones are listed, not used.

    Returns:
        the fingerprint: per-case lists sorted by case id, one ``intensity_stats`` dict per channel, the failed
        cases. Samples themselves are not kept.

    Raises:
        DatasetError: no record is usable.
    """
    good, failed = _split_records(dataset, records)
    if not good:
        detail = f"; first error: {failed[0]['error']}" if failed else ""
        raise DatasetError(f"{dataset.name}: no usable training case to fingerprint{detail}")
    intensity = []
    for channel in range(len(dataset.modalities)):
        pooled = np.concatenate([np.asarray(r["intensity_samples"][channel], dtype=np.float64) for r in good])
        intensity.append(intensity_stats(pooled))
    return DatasetFingerprint(
        dataset=dataset.name, modalities=tuple(dataset.modalities), case_ids=tuple(r["case_id"] for r in good),
        spacings=_triples([r["spacing"] for r in good], float), shapes=_triples([r["shape"] for r in good], int),
        cropped_shapes=_triples([r["cropped_shape"] for r in good], int), intensity=tuple(intensity),
        failed=tuple(failed))
