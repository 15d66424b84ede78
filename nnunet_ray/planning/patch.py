"""Plans for another patch size: the network re-derived with the plans' own topology rule, and sizes it cannot use
refused with the nearest one that works (sweeps over ``--patch-size``, loader benchmarks, tests)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nnunet_ray.planning.schema import Normalization, Plans
from nnunet_ray.planning.topology import get_filters, get_topology, total_stride


class PatchSizeError(ValueError):
    """A patch size the topology rule cannot build a U-Net for; the message suggests one that works."""


def with_patch_size(plans: Plans, patch_size: Sequence[int]) -> Plans:
    """The same plans for another patch size: kernels, strides and filters re-derived with the plans' rule.

    The rule is ``get_topology`` at ``plans.topology_spacing`` with ``plans.min_fmap`` / ``plans.max_depth``, the
    one ``make_plans`` used. The preprocessing hash changes too (training arrays are padded to the patch size).

    Args:
        plans: the dataset's plans.
        patch_size: ``dim`` positive ints, ``(Z, Y, X)`` or ``(Y, X)``.

    Returns:
        new plans with ``patch_size``, ``kernels``, ``strides`` and ``filters`` replaced.

    Raises:
        PatchSizeError: wrong length, an axis too small to downsample at all, or an edge that is not a multiple
            of the network's total stride on its axis (the message suggests the nearest size that works).
    """
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != plans.dim or min(patch) < 1:
        raise PatchSizeError(f"patch size {list(patch)}: need {plans.dim} positive edges for {plans.dim}d plans")
    problem = _topology_problem(plans, patch)
    if problem:
        raise PatchSizeError(f"patch size {list(patch)}: {problem}; try {list(_nearest_valid(plans, patch))}")
    kernels, strides = _topology(plans, patch)
    return dataclasses.replace(plans, patch_size=patch, kernels=tuple(map(tuple, kernels)),
                               strides=tuple(map(tuple, strides)), filters=tuple(get_filters(len(strides), plans.dim)))


def synthetic_plans(dim: int, patch_size: Sequence[int], *, in_channels: int = 1, n_classes: int = 2,
                    dataset: str = "synthetic") -> Plans:
    """Plans for data that has no fingerprint (loader benchmarks, tests): MRI channels at 1 mm, classes named by
    index, the topology rule's kernels, strides and filters for ``patch_size``.

    Raises:
        PatchSizeError: as ``with_patch_size``.
    """
    base = Plans(dataset=dataset, dim=dim, modalities=("MRI",) * in_channels, in_channels=in_channels,
                 n_classes=n_classes, labels={str(c): str(c) for c in range(n_classes)}, spacing=(1.0, 1.0, 1.0),
                 patch_size=(), kernels=(), strides=(), filters=(), normalization=Normalization(("mri",) * in_channels))
    return with_patch_size(base, patch_size)


def _topology(plans: Plans, patch: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
    return get_topology(patch, plans.topology_spacing, min_fmap=plans.min_fmap, max_depth=plans.max_depth)


def _topology_problem(plans: Plans, patch: Sequence[int]) -> str:
    """Why the rule cannot use ``patch`` ("" when it can)."""
    _, strides = _topology(plans, patch)
    if len(strides) < 2:
        return f"no axis reaches {2 * plans.min_fmap} voxels, so the U-Net would have no downsampling"
    step = total_stride(strides)
    bad = [f"{p} on axis {a} is not a multiple of {s}" for a, (p, s) in enumerate(zip(patch, step)) if p % s]
    return "; ".join(f"{b} (the total stride there)" for b in bad)


def _nearest_valid(plans: Plans, patch: tuple[int, ...]) -> tuple[int, ...]:
    """The closest patch (edge by edge, smaller first on ties) that the rule accepts."""
    best = list(patch)
    for axis in range(len(patch)):
        for delta in sorted(range(-patch[axis] + 1, 4 * max(patch)), key=lambda d: (abs(d), d)):
            trial = [*best[:axis], patch[axis] + delta, *best[axis + 1:]]
            _, strides = _topology(plans, trial)
            if trial[axis] % total_stride(strides)[axis] == 0 and len(strides) >= 2:
                best = trial
                break
    return tuple(best)
