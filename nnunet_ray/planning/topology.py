"""U-Net topology from a patch size and spacing: per-level kernels, strides and filter counts.

The rule is the reference's ``get_unet_params`` (NVIDIA nnU-Net v21.10): at each level an axis is
downsampled (stride 2) while its spacing is at most twice the finest current spacing and its current
size is at least ``2 * min_fmap``; its kernel is 3 where that spacing ratio is <= 2, else 1. Level 0 is
the stride-1 input block, the last level is the bottleneck with an all-3 kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_FILTERS = {2: 512, 3: 320}  # the reference caps channels at 320 in 3D and 512 in 2D
BASE_FILTERS = 32


def get_topology(
    patch_size: Sequence[int],
    spacing: Sequence[float],
    *,
    min_fmap: int = 4,
    max_depth: int = 6,
) -> tuple[list[list[int]], list[list[int]]]:
    """Kernels and strides of every U-Net level for a patch at a spacing.

    Args:
        patch_size: patch edge per spatial axis in voxels, ``(Z, Y, X)`` or ``(Y, X)``.
        spacing: voxel size in mm for the same axes (2 or 3 entries, matching ``patch_size``).
        min_fmap: an axis is only downsampled while its current size is >= ``2 * min_fmap``.
        max_depth: the most downsampling steps (the reference v21.10 uses 6).

    Returns:
        ``(kernels, strides)``: two lists with one ``dim``-length list per level. ``strides[0]`` is all
        ones (input block); ``kernels[-1]`` is all threes (bottleneck). ``kernels[l]`` is the kernel
        computed at the resolution level ``l`` works at, so level 0 gets the native-resolution kernel.

    Raises:
        ValueError: mismatched lengths, a dimensionality other than 2 or 3, or non-positive values.
    """
    dim = len(patch_size)
    if dim not in (2, 3) or len(spacing) != dim:
        raise ValueError(f"patch_size {list(patch_size)} and spacing {list(spacing)} must both have 2 or 3 entries")
    if min(patch_size) <= 0 or min(spacing) <= 0:
        raise ValueError(f"patch_size {list(patch_size)} and spacing {list(spacing)} must be positive")
    if min_fmap < 1 or max_depth < 0:
        raise ValueError(f"min_fmap ({min_fmap}) must be >= 1 and max_depth ({max_depth}) >= 0")
    # Float sizes and spacings, updated after every recorded step, exactly as the reference does.
    sizes = [float(s) for s in patch_size]
    current = [float(s) for s in spacing]
    kernels: list[list[int]] = []
    strides: list[list[int]] = []
    while len(strides) < max_depth:
        finest = min(current)
        ratios = [c / finest for c in current]
        stride = [2 if r <= 2 and s >= 2 * min_fmap else 1 for r, s in zip(ratios, sizes)]
        kernel = [3 if r <= 2 else 1 for r in ratios]
        if all(s == 1 for s in stride):
            break  # this step is not recorded: nothing can be downsampled any more
        sizes = [s / st for s, st in zip(sizes, stride)]
        current = [c * st for c, st in zip(current, stride)]
        kernels.append(kernel)
        strides.append(stride)
    strides.insert(0, [1] * dim)
    kernels.append([3] * dim)
    return kernels, strides


def total_stride(strides: Sequence[Sequence[int]]) -> list[int]:
    """Per-axis product of all strides: the factor a patch edge must be divisible by.

    Args:
        strides: per-level strides as returned by ``get_topology``.

    Returns:
        one int per spatial axis.
    """
    product = [1] * len(strides[0])
    for stride in strides:
        product = [p * s for p, s in zip(product, stride)]
    return product


def get_filters(n_levels: int, dim: int) -> list[int]:
    """Channels per level: ``min(32 * 2**l, 320 in 3D / 512 in 2D)``.

    Args:
        n_levels: number of levels (``len(strides)``), input block and bottleneck included.
        dim: 2 or 3.

    Returns:
        ``n_levels`` channel counts, e.g. ``[32, 64, 128, 256, 320, 320]`` for 6 levels in 3D.

    Raises:
        ValueError: ``dim`` not 2 or 3, or ``n_levels`` < 1.
    """
    if dim not in MAX_FILTERS:
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    return [min(BASE_FILTERS * 2**level, MAX_FILTERS[dim]) for level in range(n_levels)]
