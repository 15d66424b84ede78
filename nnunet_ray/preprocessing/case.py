"""Preprocess one case: read, crop to the nonzero box, resample, normalise, pad, sample foreground, write.

This is the function the Ray layer maps over a dataset; it never raises for a bad case. Outputs in ``out_dir``:
``<case>_x.npy`` float32 ``(C, Z, Y, X)``, ``<case>_y.npy`` uint8 ``(1, Z, Y, X)`` (not in test mode) and
``<case>.json``, the case's record (``record.py``: its geometry, foreground samples, the plans' preprocessing hash,
the mode and the raw files it was read from). Each file is written under a temporary name and renamed; the
json goes last and marks the case done, so a rerun skips finished cases and redoes half-written or stale ones
(another preprocessing hash: only plans fields that change the arrays count) and those whose raw files changed since
("reprocessed").
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ray.data.atomic import atomic_path, leftover_temporaries
from nnunet_ray.data.nifti import read_case
from nnunet_ray.data.types import CaseError, CaseFiles
from nnunet_ray.planning.schema import Normalization, Plans
from nnunet_ray.preprocessing.crop import crop_to_box, nonzero_box
from nnunet_ray.preprocessing.normalize import channel_schemes, normalize
from nnunet_ray.preprocessing.raw_files import raw_file_records
from nnunet_ray.preprocessing.record import (
    RAW_CHANGED,
    UP_TO_DATE,
    CaseProperties,
    done_state,
    record_name,
    write_case_record,
)
from nnunet_ray.preprocessing.resample import (
    anisotropic_axis,
    resample_image,
    resample_label,
    resample_mask,
    resampled_shape,
)

MODES = ("training", "val", "test")
MAX_FOREGROUND_SAMPLES = 1000  # voxel coordinates kept per class for foreground-oversampled crops


def target_spacing(plans: Plans, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """The spacing a case is resampled to: the plans' in 3D; in 2D the case keeps its own z spacing.

    Args:
        plans: uses ``dim`` and ``spacing``.
        spacing: the case's voxel size in mm, ``(z, y, x)``.

    Returns:
        Target voxel size in mm, ``(z, y, x)``.
    """
    z, y, x = plans.spacing
    return (float(spacing[0]), y, x) if plans.dim == 2 else (z, y, x)


def pad_widths(shape: tuple[int, ...], patch_size: tuple[int, ...]) -> list[list[int]]:
    """Symmetric zero padding so each axis reaches the patch size (odd remainders: floor before, ceil after).

    Args:
        shape: spatial shape ``(Z, Y, X)``.
        patch_size: ``[Z, Y, X]`` (3D) or ``[Y, X]`` (2D: Z is never padded).

    Returns:
        ``[[before, after]] * 3`` voxels per axis.
    """
    patch = [0] * (3 - len(patch_size)) + list(patch_size)
    missing = [max(0, p - s) for s, p in zip(shape, patch)]
    return [[m // 2, m - m // 2] for m in missing]


def foreground_samples(label: np.ndarray, n_classes: int, *, seed: int) -> dict[str, list[list[int]]]:
    """Up to ``MAX_FOREGROUND_SAMPLES`` random voxel coordinates of each foreground class.

    Args:
        label: ``(1, Z, Y, X)`` class indices.
        n_classes: number of classes, background included.
        seed: random seed (the same case always gets the same samples).

    Returns:
        ``{"1": [[z, y, x], ...], ...}`` for every class 1..n_classes-1 (an empty list when absent).
    """
    rng = np.random.default_rng(seed)
    flat = label[0].ravel()
    samples: dict[str, list[list[int]]] = {}
    for c in range(1, n_classes):
        where = np.flatnonzero(flat == c)
        if where.size > MAX_FOREGROUND_SAMPLES:
            where = np.sort(rng.choice(where, MAX_FOREGROUND_SAMPLES, replace=False))
        samples[str(c)] = np.stack(np.unravel_index(where, label.shape[1:]), axis=1).tolist()
    return samples


def _check_case(case_id: str, image: np.ndarray, label: np.ndarray | None, plans: Plans) -> None:
    if image.shape[0] != plans.in_channels:
        raise CaseError(case_id, f"image has {image.shape[0]} channels, plans expect {plans.in_channels}")
    n_classes = plans.n_classes
    if label is not None and label.size and int(label.max()) > n_classes - 1:
        raise CaseError(case_id, f"label has class {int(label.max())}, plans allow 0..{n_classes - 1}")


def _normalize(image: np.ndarray, normalization: Normalization, nonzero: np.ndarray) -> np.ndarray:
    """Normalise; each MRI channel takes statistics from its own nonzero region *before* resampling.

    A cubic resample leaves no voxel exactly 0, so each channel's nonzero mask ``(C, Z, Y, X)`` is taken on the
    cropped input, resampled with nearest neighbour, and the background outside it is kept at 0 (as MONAI's
    ``nonzero=True, channel_wise=True`` would).
    """
    mri = np.array([s == "mri" for s in channel_schemes(normalization, image.shape[0])])
    image = image.astype(np.float32)  # a copy: the resampled array may be the caller's
    image[mri] = np.where(nonzero[mri], image[mri], 0.0)
    return normalize(image, normalization, nonzero_masks=nonzero)


def _nonzero_masks(cropped: np.ndarray, new_shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    """``(C, *new_shape)`` bool: each channel's ``!= 0`` voxels, resampled with nearest neighbour."""
    return np.stack([resample_mask(channel != 0, new_shape, aniso_axis=axis) for channel in cropped])


def _process(case: CaseFiles, plans: Plans, mode: str) -> tuple[dict[str, np.ndarray], CaseProperties]:
    """The arrays to write (by file suffix) and the properties for ``<case>.json``, bookkeeping excluded."""
    image, label = read_case(case)
    labels = None if label is None else label.array
    _check_case(case.case_id, image.array, labels, plans)
    try:
        box = nonzero_box(image.array)
    except ValueError as exc:
        raise CaseError(case.case_id, str(exc)) from exc
    spacing = target_spacing(plans, image.spacing)
    cropped_shape = [b - a for a, b in box]
    new_shape = resampled_shape(cropped_shape, image.spacing, spacing)
    axis = anisotropic_axis(image.spacing, spacing)
    cropped = crop_to_box(image.array, box)
    x = resample_image(cropped, new_shape, aniso_axis=axis)
    x = _normalize(x, plans.normalization, _nonzero_masks(cropped, new_shape, axis))
    pad = pad_widths(new_shape, plans.patch_size) if mode == "training" else [[0, 0]] * 3
    arrays = {"_x.npy": np.pad(x, [[0, 0], *pad]).astype(np.float32, copy=False)}
    foreground: dict[str, list[list[int]]] = {}
    if labels is not None:
        y = resample_label(crop_to_box(labels, box), new_shape, n_classes=plans.n_classes, aniso_axis=axis)
        arrays["_y.npy"] = np.pad(y, [[0, 0], *pad]).astype(np.uint8, copy=False)
        foreground = foreground_samples(arrays["_y.npy"], plans.n_classes, seed=zlib.crc32(case.case_id.encode()))
    props = CaseProperties(
        original_shape=tuple(image.shape), original_spacing=tuple(float(s) for s in image.spacing),
        affine=tuple(tuple(float(v) for v in row) for row in np.asarray(image.affine, float)),
        crop_box=tuple((int(a), int(b)) for a, b in box), resampled_shape=tuple(int(n) for n in new_shape),
        pad=tuple((int(a), int(b)) for a, b in pad), shape=tuple(arrays["_x.npy"].shape[1:]),
        anisotropic_axis=None if axis is None else int(axis), target_spacing=tuple(float(s) for s in spacing),
        foreground=foreground)
    return arrays, props


def preprocess_for_prediction(case: CaseFiles, plans: Plans) -> tuple[np.ndarray, CaseProperties]:
    """Preprocess a case's image in memory, exactly as ``preprocess_case(mode="test")`` would write it.

    The prediction path: nothing is written, the label (if any) is ignored, no padding is added (the sliding
    window pads what it needs).

    Args:
        case: the case's image files.
        plans: the plans of the model that will predict it.

    Returns:
        (image ``(C, Z, Y, X)`` float32 on the plans' grid, its properties as ``<case>.json`` would record them).

    Raises:
        CaseError: the case is unreadable, has the wrong channel count, or an empty image.
    """
    arrays, props = _process(dataclasses.replace(case, label=None), plans, "test")
    return arrays["_x.npy"], props


def _case_files(out_dir: Path, case_id: str, *, temporary: bool) -> list[Path]:
    """The case's output files, or its temporary files (any process's, e.g. one killed mid-write)."""
    finals = [out_dir / name for name in (f"{case_id}_x.npy", f"{case_id}_y.npy", record_name(case_id))]
    return [tmp for final in finals for tmp in leftover_temporaries(final)] if temporary else finals


def _remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):  # best effort: a failed case is reported failed either way
            path.unlink(missing_ok=True)


def _write(out_dir: Path, arrays: dict[str, np.ndarray], props: CaseProperties) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    # The json is the done-marker: drop an old one first so a crash below leaves the case "not done".
    (out_dir / record_name(props.case_id)).unlink(missing_ok=True)
    _remove(_case_files(out_dir, props.case_id, temporary=True))  # leftovers of an interrupted run
    for suffix, array in arrays.items():
        with atomic_path(out_dir / f"{props.case_id}{suffix}") as tmp, open(tmp, "wb") as f:
            np.save(f, array)
    write_case_record(out_dir, props)


def _mode_files(case: CaseFiles, mode: str) -> CaseFiles:
    """The files ``mode`` reads: test mode ignores the label, the others need one."""
    if mode == "test":
        return dataclasses.replace(case, label=None)
    if case.label is None:
        raise CaseError(case.case_id, f"{mode} mode needs a label file")
    return case


def preprocess_case(case: CaseFiles, plans: Plans, out_dir: Path, *, mode: str = "training",
                    done_in: str | Path | None = None) -> dict:
    """Preprocess one case into ``out_dir`` (see the module docstring for the files).

    Args:
        case: the case's files; its label is ignored in ``"test"`` mode and required otherwise.
        plans: the dataset's plans.
        out_dir: the preprocessed folder, created if missing.
        mode: ``"training"`` (pad to the patch size), ``"val"`` (no padding) or ``"test"`` (no label).
        done_in: where a finished case is looked for (``done_state``), default ``out_dir``: a results root on a
            URI, when ``out_dir`` is the local scratch folder the case is written to before its upload.

    Returns:
        ``{"case_id", "status": "done" | "reprocessed" (its raw files changed) | "skipped" | "failed",
        "error": "<case_id>: <problem>" | None, "seconds"}``.

    Raises:
        ValueError: an unknown ``mode`` (a caller bug, not a bad case).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    start, out_dir = time.perf_counter(), Path(out_dir)
    record: dict[str, Any] = {"case_id": case.case_id, "status": "done", "error": None}
    try:
        case = _mode_files(case, mode)
        state = done_state(out_dir if done_in is None else done_in, case, plans.preprocessing_hash, mode)
        if state == UP_TO_DATE:
            record["status"] = "skipped"
        else:
            raw_files = raw_file_records(case)  # before reading: a file changed meanwhile is seen next time
            arrays, props = _process(case, plans, mode)
            _write(out_dir, arrays, dataclasses.replace(props, case_id=case.case_id, mode=mode, raw_files=raw_files,
                                                        plans_hash=plans.preprocessing_hash))
            record["status"] = "reprocessed" if state == RAW_CHANGED else "done"
    except Exception as exc:  # noqa: BLE001 - any failure of one case must not stop the others
        # A failed case leaves nothing behind: no temporary files, no outputs of an older run.
        _remove(_case_files(out_dir, case.case_id, temporary=True))
        _remove(_case_files(out_dir, case.case_id, temporary=False))
        error = str(exc) if isinstance(exc, CaseError) else f"{case.case_id}: {type(exc).__name__}: {exc}"
        record.update(status="failed", error=error)
    record["seconds"] = time.perf_counter() - start
    return record
