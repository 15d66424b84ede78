"""The reference's hard-coded plans for the Medical Segmentation Decathlon tasks 01-10.

Values are those of NVIDIA nnU-Net ``data_preprocessing/configs.py`` (v21.10): patch size and target
spacing per dimensionality, in ``(z, y, x)`` / ``(y, x)`` order, and CT clip/normalisation statistics for
the CT tasks. A dataset is planned from these only when its folder has the MSD task's name (``Task04_Hippocampus``,
not any ``Task04_*``) and the task's channel and class counts; anything else is planned from its fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_ray.planning.schema import Normalization, Plans
from nnunet_ray.planning.topology import get_filters, get_topology


@dataclass(frozen=True)
class CTStats:
    """Dataset-level CT statistics over foreground voxels (Hounsfield units).

    Attributes:
        ct_min: clip floor (0.5th percentile).
        ct_max: clip ceiling (99.5th percentile).
        ct_mean: mean used for the z-score.
        ct_std: standard deviation used for the z-score.
    """

    ct_min: float
    ct_max: float
    ct_mean: float
    ct_std: float


@dataclass(frozen=True)
class MSDPreset:
    """One MSD task's reference plans.

    Attributes:
        name: the task folder name, e.g. ``Task04_Hippocampus``.
        patch_3d: 3D patch ``(Z, Y, X)`` in voxels.
        spacing_3d: 3D target spacing ``(z, y, x)`` in mm.
        patch_2d: 2D patch ``(Y, X)`` in voxels.
        spacing_2d: 2D in-plane target spacing ``(y, x)`` in mm.
        ct: CT statistics, or None for the MRI tasks.
    """

    name: str
    patch_3d: tuple[int, int, int]
    spacing_3d: tuple[float, float, float]
    patch_2d: tuple[int, int]
    spacing_2d: tuple[float, float]
    ct: CTStats | None = None


MSD_PRESETS: dict[int, MSDPreset] = {
    1: MSDPreset("Task01_BrainTumour", (128, 128, 128), (1.0, 1.0, 1.0), (192, 160), (1.0, 1.0)),
    2: MSDPreset("Task02_Heart", (80, 192, 160), (1.37, 1.25, 1.25), (320, 256), (1.25, 1.25)),
    3: MSDPreset("Task03_Liver", (128, 128, 128), (1.0, 0.7676, 0.7676), (512, 512), (0.7676, 0.7676),
                 CTStats(-17.0, 201.0, 99.4, 39.36)),
    4: MSDPreset("Task04_Hippocampus", (40, 56, 40), (1.0, 1.0, 1.0), (56, 40), (1.0, 1.0)),
    5: MSDPreset("Task05_Prostate", (20, 320, 256), (3.6, 0.62, 0.62), (320, 320), (0.62, 0.62)),
    6: MSDPreset("Task06_Lung", (80, 192, 160), (1.24, 0.79, 0.79), (512, 512), (0.79, 0.79),
                 CTStats(-1024.0, 325.0, -158.58, 324.7)),
    7: MSDPreset("Task07_Pancreas", (40, 224, 224), (2.5, 0.8, 0.8), (512, 512), (0.8, 0.8),
                 CTStats(-96.0, 215.0, 77.9, 75.4)),
    8: MSDPreset("Task08_HepaticVessel", (64, 192, 192), (1.5, 0.8, 0.8), (512, 512), (0.8, 0.8),
                 CTStats(-3.0, 243.0, 104.37, 52.62)),
    9: MSDPreset("Task09_Spleen", (64, 192, 160), (1.6, 0.79, 0.79), (512, 512), (0.79, 0.79),
                 CTStats(-41.0, 176.0, 99.29, 39.47)),
    10: MSDPreset("Task10_Colon", (56, 192, 160), (3.0, 0.78, 0.78), (512, 512), (0.78, 0.78),
                  CTStats(-30.0, 165.82, 62.18, 32.65)),
}


def match_preset(name: str, n_channels: int, n_classes: int) -> tuple[MSDPreset | None, str]:
    """The MSD preset for a dataset, and one line saying why it is or is not used.

    A ``TaskNN_*`` number alone is not enough: a custom ``Task04_MyBrains`` must not get the Hippocampus patch.

    Args:
        name: the dataset folder name.
        n_channels: input channels of the dataset.
        n_classes: classes, background included.

    Returns:
        ``(preset or None, reason)``.
    """
    preset = next((p for p in MSD_PRESETS.values() if p.name == name), None)
    if preset is None:
        return None, f"{name} is not an MSD task folder name: planned from the fingerprint"
    number = next(n for n, p in MSD_PRESETS.items() if p is preset)
    expected = MSD_CHANNELS_CLASSES[number]
    if (n_channels, n_classes) != expected:
        return None, (f"{name} has {n_channels} channels / {n_classes} classes, the MSD task has {expected[0]} / "
                      f"{expected[1]}: planned from the fingerprint")
    return preset, f"{name} matches the MSD task: the reference's preset patch size and spacing"


def preset_geometry(preset: MSDPreset, dim: int) -> tuple[list[int], list[float], list[float]]:
    """Patch size, full 3-axis target spacing and the spacing the topology is computed from.

    In 2D the plans still carry three spacings: z is the 3D preset's (informational: 2D preprocessing
    leaves z at each case's own spacing) and y, x are the 2D preset's.

    Args:
        preset: the task's preset.
        dim: 2 or 3.

    Returns:
        ``(patch_size, spacing_zyx, topology_spacing)``: ``dim`` ints, 3 floats (mm), ``dim`` floats (mm).

    Raises:
        ValueError: ``dim`` is not 2 or 3.
    """
    if dim == 3:
        return list(preset.patch_3d), list(preset.spacing_3d), list(preset.spacing_3d)
    if dim == 2:
        spacing = [preset.spacing_3d[0], *preset.spacing_2d]
        return list(preset.patch_2d), spacing, list(preset.spacing_2d)
    raise ValueError(f"dim must be 2 or 3, got {dim}")


# Input channels and classes (background included) of the MSD tasks, for plans built without the data.
MSD_CHANNELS_CLASSES: dict[int, tuple[int, int]] = {
    1: (4, 4), 2: (1, 2), 3: (1, 3), 4: (1, 3), 5: (2, 3), 6: (1, 2), 7: (1, 3), 8: (1, 3), 9: (1, 2), 10: (1, 2),
}


def preset_plans(task_number: int, dim: int, *, min_fmap: int = 4, max_depth: int = 6) -> Plans:
    """An MSD task's plans built from the preset alone (no data needed): benchmarks and model tests.

    Real runs use ``make_plans`` on the dataset's fingerprint; here channels are named by scheme and classes by
    index, and MRI channels are assumed for the non-CT tasks.

    Args:
        task_number: 1..10.
        dim: 2 or 3.

    Returns:
        the plans, with the preset's patch size, spacing, CT statistics and the rule's topology.
    """
    preset = MSD_PRESETS[task_number]
    patch, spacing, topology_spacing = preset_geometry(preset, dim)
    kernels, strides = get_topology(patch, topology_spacing, min_fmap=min_fmap, max_depth=max_depth)
    in_channels, n_classes = MSD_CHANNELS_CLASSES[task_number]
    ct = preset.ct
    normalization = Normalization(("mri",) * in_channels) if ct is None else Normalization(
        ("ct",) * in_channels, ct_min=ct.ct_min, ct_max=ct.ct_max, ct_mean=ct.ct_mean, ct_std=ct.ct_std)
    return Plans(dataset=preset.name, dim=dim, modalities=("CT" if ct else "MRI",) * in_channels,
                 in_channels=in_channels, n_classes=n_classes, labels={str(c): str(c) for c in range(n_classes)},
                 spacing=tuple(spacing), patch_size=tuple(patch), kernels=tuple(map(tuple, kernels)),
                 strides=tuple(map(tuple, strides)), filters=tuple(get_filters(len(strides), dim)),
                 normalization=normalization, preset="msd",
                 min_fmap=min_fmap, max_depth=max_depth)
