"""``plans.json``: everything the preprocessor, loader and model need, decided once per dataset and dim.

MSD tasks 01-10 (folder named as the MSD task, with its channel and class counts) take the reference's patch
size, spacing and CT statistics (``preset: "msd"``); any other dataset is planned from its fingerprint
(``preset: "auto"``): median spacing with the coarse axis tightened, patch from the median resampled shape within a
voxel budget, rounded up to the network's total stride when that fits the budget (as nnU-Net v2), else down. The
result is a typed ``Plans`` (``planning/schema.py`` loads, saves, migrates and hashes it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnunet_ray.config import ConfigError
from nnunet_ray.data.geometry import coarse_axis
from nnunet_ray.data.types import DatasetError, DatasetInfo
from nnunet_ray.planning.fingerprint import DatasetFingerprint
from nnunet_ray.planning.presets import MSD_PRESETS, CTStats, match_preset, preset_geometry
from nnunet_ray.planning.schema import Normalization, Plans
from nnunet_ray.planning.topology import get_filters, get_topology, total_stride

# Patch voxels when memory_budget_mvox is 0. 3D: the reference's largest 3D preset, 80 x 192 x 160 (Task02/06,
# 2.46 Mvox; more than Task01/03's 128^3), so an automatic plan never gets a smaller patch than the reference ran.
DEFAULT_BUDGET = {3: max(math.prod(p.patch_3d) for p in MSD_PRESETS.values()), 2: 512**2}
MIN_PATCH = 8  # smallest automatic patch edge in voxels

def anisotropic_axis(spacing: Sequence[float] | np.ndarray) -> int | None:
    """The coarse axis of ``spacing`` when ``max / min >= 3`` (one rule with preprocessing: ``coarse_axis``).

    Args:
        spacing: ``(z, y, x)`` mm.

    Returns:
        the index of the single largest spacing, or None for (near-)isotropic spacing or two tied coarse axes.
    """
    return coarse_axis(spacing)


def target_spacing(spacings: Sequence[Sequence[float]]) -> list[float]:
    """Target spacing for automatic planning: the per-axis median, with the coarse axis tightened.

    When the median is anisotropic the coarse axis (argmax; the reference's argmin picked the finest
    axis by mistake) takes the 10th percentile of that axis's spacings, never finer than the other axes.

    Args:
        spacings: ``(N, 3)`` per-case ``(z, y, x)`` spacings in mm.

    Returns:
        ``[z, y, x]`` in mm.
    """
    values = np.asarray(spacings, dtype=np.float64)
    target = np.median(values, axis=0)
    axis = anisotropic_axis(target)
    if axis is not None:
        others = max(float(target[i]) for i in range(len(target)) if i != axis)
        target[axis] = max(float(np.percentile(values[:, axis], 10)), others)
    return [float(s) for s in target]


def _shrink_to_budget(patch: list[int], spacing: Sequence[float], budget: int, **topology: int) -> list[int]:
    """Cut the patch's longest-in-mm axis, one stride multiple at a time, until it fits the budget."""
    patch = list(patch)
    while math.prod(patch) > budget:
        candidates = [i for i, p in enumerate(patch) if p > MIN_PATCH]
        if not candidates:
            break
        axis = max(candidates, key=lambda i: patch[i] * spacing[i])
        step = total_stride(get_topology(patch, spacing, **topology)[1])[axis]
        smaller = patch[axis] // step * step
        patch[axis] = max(MIN_PATCH, smaller if smaller < patch[axis] else smaller - step)
    return patch


def _round_to_strides(patch: list[int], spacing: Sequence[float], **topology: int) -> list[int]:
    """Round each edge down to a multiple of the total stride, until the topology stops changing."""
    for _ in range(16):  # each pass can only remove strides, so this settles within a few passes
        step = total_stride(get_topology(patch, spacing, **topology)[1])
        rounded = [max(s, p // s * s) for p, s in zip(patch, step)]
        if rounded == patch:
            return patch
        patch = rounded
    raise AssertionError(f"patch rounding did not settle: {patch}")


def _round_up_to_strides(patch: list[int], spacing: Sequence[float], **topology: int) -> list[int]:
    """Round each edge up to a multiple of the total stride; a bigger patch may add a stride, so repeat."""
    for _ in range(16):  # edges only grow and strides are bounded by max_depth, so this settles quickly
        step = total_stride(get_topology(patch, spacing, **topology)[1])
        rounded = [-(-p // s) * s for p, s in zip(patch, step)]
        if rounded == patch:
            return patch
        patch = rounded
    raise AssertionError(f"patch rounding did not settle: {patch}")


def auto_patch_size(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    *,
    budget: int,
    min_fmap: int = 4,
    max_depth: int = 6,
) -> list[int]:
    """Patch size from the median resampled shape, within a voxel budget, divisible by the total stride.

    Args:
        median_shape: median case shape at the target spacing, ``dim`` entries (voxels).
        spacing: target spacing of the same axes (mm).
        budget: the most voxels a patch may hold.
        min_fmap: as in ``get_topology``.
        max_depth: as in ``get_topology``.

    Returns:
        ``dim`` ints, each >= 8 (unless the budget forced fewer axes) and a multiple of the topology's
        total stride on that axis, with product <= ``budget`` when reachable with edges of 8. When the median
        shape rounded *up* to the strides fits the budget, that is the patch: a median case then fits one window
        (rounding 69 x 99 x 85 down to 64 x 96 x 80 made prediction run 8 windows instead of 1).
    """
    topology = {"min_fmap": min_fmap, "max_depth": max_depth}
    patch = [max(MIN_PATCH, int(round(s))) for s in median_shape]
    rounded_up = _round_up_to_strides(patch, spacing, **topology)
    if math.prod(rounded_up) <= budget:
        return rounded_up
    # Round first: rounding alone may already fit the budget without cutting a whole stride step elsewhere.
    patch = _round_to_strides(patch, spacing, **topology)
    patch = _shrink_to_budget(patch, spacing, budget, **topology)
    return _round_to_strides(patch, spacing, **topology)


def _auto_geometry(fingerprint: DatasetFingerprint, dim: int, budget: int,
                   **topology: int) -> tuple[list[int], list[float]]:
    spacing = target_spacing(fingerprint.spacings)
    cropped = np.asarray(fingerprint.cropped_shapes, dtype=np.float64)
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)
    median_shape = np.median(cropped * spacings / np.asarray(spacing), axis=0)  # (3,) voxels at target
    patch = auto_patch_size(median_shape[3 - dim:], spacing[3 - dim:], budget=budget, **topology)
    return patch, spacing


def channel_scheme(name: str) -> str:
    """The normalisation scheme a channel name selects, as nnU-Net v2 maps its ``channel_names`` (case-insensitive,
    nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py): "CT", "noNorm", "rescale_to_0_1",
    "rgb_to_0_1"; any other name (MSD's "MRI", "T2", "FLAIR", v2's "zscore") is the per-case z-score ("mri")."""
    scheme = name.casefold()
    return scheme if scheme in ("ct", "nonorm", "rescale_to_0_1", "rgb_to_0_1") else "mri"


def _normalization(dataset: DatasetInfo, fingerprint: DatasetFingerprint, ct_preset: CTStats | None
                   ) -> Normalization:
    """Per-channel schemes from the channel names (``channel_scheme``) and the CT statistics if any channel is CT.

    The reference normalised every channel as CT when channel 0 was CT; a PET/CT or CT/MR dataset keeps its
    other channels' information here.
    """
    channels = tuple(channel_scheme(m) for m in dataset.modalities)
    if "ct" not in channels:
        return Normalization(channels)
    if ct_preset is not None:
        return Normalization(channels, ct_min=ct_preset.ct_min, ct_max=ct_preset.ct_max, ct_mean=ct_preset.ct_mean,
                             ct_std=ct_preset.ct_std)
    ct = [(c, fingerprint.intensity[c]) for c, scheme in enumerate(channels) if scheme == "ct"]
    if not ct[0][1]["n_samples"]:
        raise DatasetError(f"{dataset.name}: no labelled foreground voxels in any case; CT statistics need some")
    more = tuple((c, *_ct_statistics(stats)) for c, stats in ct[1:])
    return Normalization(channels, *_ct_statistics(ct[0][1]), more_ct=more)


def _ct_statistics(stats: dict[str, Any]) -> tuple[float, float, float, float]:
    """(min, max, mean, std) of one CT channel's foreground: clipped to its 0.5 / 99.5 percentiles."""
    return stats["percentile_00_5"], stats["percentile_99_5"], stats["mean"], stats["std"]


def make_plans(
    dataset: DatasetInfo,
    fingerprint: DatasetFingerprint,
    *,
    dim: int,
    min_fmap: int = 4,
    max_depth: int = 6,
    memory_budget_mvox: float = 0.0,
) -> Plans:
    """Plans for one dataset and dimensionality.

    Args:
        dataset: the raw dataset (channels, labels, task number).
        fingerprint: ``merge_fingerprints`` output for the same dataset.
        dim: 2 or 3.
        min_fmap: smallest feature-map edge that may still be downsampled is ``2 * min_fmap``.
        max_depth: the most downsampling steps.
        memory_budget_mvox: patch budget in megavoxels for automatic planning; 0 = ``DEFAULT_BUDGET``
            (80 x 192 x 160 in 3D, 512^2 in 2D).

    Returns:
        the plans; ``spacing`` always has 3 entries, ``patch_size``/kernels/strides have ``dim``;
        ``anisotropic_axis`` describes the data's median spacing (which axis is the slow one), independent of
        the target.

    Raises:
        ConfigError: bad ``dim`` / ``min_fmap`` / ``max_depth`` / ``memory_budget_mvox``.
        DatasetError: a CT dataset without foreground samples and without preset statistics.
        ValueError: the fingerprint belongs to another dataset.
    """
    _check_options(dim, min_fmap, max_depth, memory_budget_mvox)
    if fingerprint.dataset != dataset.name:
        raise ValueError(f"fingerprint is for {fingerprint.dataset!r}, not {dataset.name!r}")
    topology = {"min_fmap": min_fmap, "max_depth": max_depth}
    preset, _ = match_preset(dataset.name, len(dataset.modalities), dataset.n_classes)
    if preset is not None:
        patch, spacing, topology_spacing = preset_geometry(preset, dim)
    else:
        budget = int(memory_budget_mvox * 1e6) if memory_budget_mvox > 0 else DEFAULT_BUDGET[dim]
        patch, spacing = _auto_geometry(fingerprint, dim, budget, **topology)
        topology_spacing = spacing[3 - dim:]
    kernels, strides = get_topology(patch, topology_spacing, **topology)
    return Plans(
        dataset=dataset.name, dim=dim, modalities=tuple(dataset.modalities), in_channels=len(dataset.modalities),
        n_classes=dataset.n_classes, labels={str(k): v for k, v in sorted(dataset.labels.items())},
        spacing=tuple(spacing), patch_size=tuple(patch), kernels=tuple(map(tuple, kernels)),
        strides=tuple(map(tuple, strides)), filters=tuple(get_filters(len(strides), dim)),
        normalization=_normalization(dataset, fingerprint, preset.ct if preset else None),
        anisotropic_axis=anisotropic_axis(fingerprint.median_spacing),
        preset="msd" if preset is not None else "auto", min_fmap=min_fmap, max_depth=max_depth)


def _check_options(dim: int, min_fmap: int, max_depth: int, memory_budget_mvox: float) -> None:
    if dim not in (2, 3):
        raise ConfigError(f"--dim: must be 2 or 3, got {dim}")
    if min_fmap < 1:
        raise ConfigError(f"--min-fmap: must be >= 1, got {min_fmap}")
    if max_depth < 1:
        raise ConfigError(f"--max-depth: must be >= 1, got {max_depth}")
    if memory_budget_mvox < 0:
        raise ConfigError(f"--memory-budget-mvox: must be >= 0, got {memory_budget_mvox}")
