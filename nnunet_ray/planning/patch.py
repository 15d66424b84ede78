"""Plans for another patch size: the network topology re-derived with the planner's own rule.

A sweep (``nnunet-ray tune --patch-size ...``) or a training option (``--patch-size``) may ask for a patch the
planner did not choose. ``plans_for_patch`` recomputes kernels, strides and filters for it with
``get_topology`` (the reference's ``get_unet_params``), using the ``min_fmap`` / ``max_depth`` stored in the
plans when present (else the planner's defaults 4 / 6), so the result is the network the planner would have
built for that patch. A patch the rule cannot use raises ``PatchSizeError`` before any training starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nnunet_ray.planning.plans import plans_hash
from nnunet_ray.planning.topology import MAX_FILTERS, get_topology, total_stride

DEFAULT_MIN_FMAP = 4  # the planner's defaults (PlanConfig.min_fmap / max_depth)
DEFAULT_MAX_DEPTH = 6


class PatchSizeError(ValueError):
    """A patch size the topology rule cannot build a U-Net for; the message says why."""


def plans_for_patch(plans: dict[str, Any], patch_size: Sequence[int]) -> dict[str, Any]:
    """A copy of ``plans`` for ``patch_size``, with kernels, strides and filters re-derived.

    Filters keep the plans' base width (``filters[0]``; 32 for planned datasets) and double per level up to
    the cap of the dim (320 in 3D, 512 in 2D), as ``get_filters`` does.

    Args:
        plans: plans.json content.
        patch_size: ``dim`` edges in voxels, ``(Z, Y, X)`` or ``(Y, X)``; empty returns ``plans`` unchanged.

    Returns:
        the new plans (``patch_size``, ``kernels``, ``strides``, ``filters``, ``hash`` replaced).

    Raises:
        PatchSizeError: wrong number of edges, an edge < 1, no axis can be downsampled, or an edge that is not
            a multiple of the network's total stride on its axis (the skip connections would not line up).
    """
    if not patch_size:
        return plans
    dim = int(plans["dim"])
    patch = [int(p) for p in patch_size]
    if len(patch) != dim or min(patch) < 1:
        raise PatchSizeError(f"{patch} is not {dim} positive edges for {dim}d plans")
    min_fmap = int(plans.get("min_fmap", DEFAULT_MIN_FMAP))
    max_depth = int(plans.get("max_depth", DEFAULT_MAX_DEPTH))
    kernels, strides = get_topology(patch, plans["spacing"][3 - dim:], min_fmap=min_fmap, max_depth=max_depth)
    if len(strides) < 2:
        raise PatchSizeError(f"{patch} is too small: no axis reaches {2 * min_fmap} voxels, so the U-Net could "
                             "not downsample at all")
    step = total_stride(strides)
    bad = [f"{edge} (axis {axis}) is not a multiple of {s}" for axis, (edge, s) in enumerate(zip(patch, step))
           if edge % s]
    if bad:
        raise PatchSizeError(f"{patch}: {'; '.join(bad)}, the total stride of the topology this patch gets")
    base = int(plans["filters"][0])
    new = {**plans, "patch_size": patch, "kernels": kernels, "strides": strides,
           "filters": [min(base * 2**level, MAX_FILTERS[dim]) for level in range(len(strides))]}
    new["hash"] = plans_hash(new)
    return new
