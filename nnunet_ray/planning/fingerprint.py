"""Dataset fingerprint: per-case geometry and foreground intensities, merged into ``fingerprint.json``.

``case_fingerprint`` is the per-case map step (Ray Data runs it over the cluster); it never raises for a
bad case. ``merge_fingerprints`` reduces the records: per-case lists, medians and per-channel intensity
statistics pooled over the sampled foreground voxels (label > 0) of the raw, non-resampled images.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from nnunet_ray.data.geometry import nonzero_box
from nnunet_ray.data.nifti import read_case
from nnunet_ray.data.types import CaseError, CaseFiles, DatasetError, DatasetInfo

FINGERPRINT_FILE = "fingerprint.json"  # the merged fingerprint, beside plans.json


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


def merge_fingerprints(dataset: DatasetInfo, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Reduce per-case records into the dataset fingerprint (the content of ``fingerprint.json``).

    Args:
        dataset: the dataset the records belong to (its channel count is checked).
        records: ``case_fingerprint`` outputs, in any order; errored ones are listed, not used.

    Returns:
        ``{"dataset", "modalities", "n_cases", "case_ids", "spacings", "shapes", "cropped_shapes"
        (per-case lists, sorted by case id), "median_spacing" [z, y, x] mm, "median_shape",
        "median_cropped_shape" (floats), "intensity": one ``intensity_stats`` dict per channel,
        "failed": [{"case_id", "error"}]}``. Samples themselves are not kept.

    Raises:
        DatasetError: no record is usable.
    """
    good, failed = _split_records(dataset, records)
    if not good:
        detail = f"; first error: {failed[0]['error']}" if failed else ""
        raise DatasetError(f"{dataset.name}: no usable training case to fingerprint{detail}")
    spacings = [[float(s) for s in r["spacing"]] for r in good]
    shapes = [[int(s) for s in r["shape"]] for r in good]
    cropped = [[int(s) for s in r["cropped_shape"]] for r in good]
    intensity = []
    for channel in range(len(dataset.modalities)):
        pooled = np.concatenate([np.asarray(r["intensity_samples"][channel], dtype=np.float64) for r in good])
        intensity.append(intensity_stats(pooled))
    return {
        "dataset": dataset.name,
        "modalities": list(dataset.modalities),
        "n_cases": len(good),
        "case_ids": [r["case_id"] for r in good],
        "spacings": spacings,
        "shapes": shapes,
        "cropped_shapes": cropped,
        "median_spacing": np.median(np.asarray(spacings), axis=0).tolist(),
        "median_shape": np.median(np.asarray(shapes, dtype=np.float64), axis=0).tolist(),
        "median_cropped_shape": np.median(np.asarray(cropped, dtype=np.float64), axis=0).tolist(),
        "intensity": intensity,
        "failed": failed,
    }
