"""Plans from a fingerprint dict: presets and automatic planning (the plans.json file: test_schema.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from nnunet_ray.config import ConfigError
from nnunet_ray.data.types import DatasetError, DatasetInfo
from nnunet_ray.planning.fingerprint import DatasetFingerprint
from nnunet_ray.planning.plans import DEFAULT_BUDGET, anisotropic_axis, auto_patch_size, make_plans, target_spacing
from nnunet_ray.planning.presets import MSD_PRESETS, match_preset
from nnunet_ray.planning.schema import Normalization
from nnunet_ray.planning.topology import total_stride


def dataset(name: str = "Dataset001_Fake", modalities: tuple[str, ...] = ("MRI",), n_classes: int = 3) -> DatasetInfo:
    labels = {0: "background", **{i: f"class{i}" for i in range(1, n_classes)}}
    return DatasetInfo(name, Path("/nowhere") / name, modalities, labels, ())


def fingerprint(name: str, spacings: list, cropped: list, *, ct_stats: dict | None = None) -> DatasetFingerprint:
    """A merged fingerprint as ``merge_fingerprints`` makes it (only the fields planning reads)."""
    stats = ct_stats or {"n_samples": 0, "mean": None, "std": None,
                         "percentile_00_5": None, "percentile_99_5": None}
    return DatasetFingerprint(dataset=name, spacings=tuple(map(tuple, spacings)),
                              cropped_shapes=tuple(map(tuple, cropped)), intensity=(stats,))


@pytest.mark.parametrize(
    ("spacing", "axis"),
    [((5.0, 0.8, 0.8), 0), ((0.8, 0.8, 5.0), 2), ((0.7, 3.0, 0.7), 1), ((1.0, 1.0, 2.9), None),
     ((1.0, 1.0, 3.0), 2), ((1.0, 1.0, 1.0), None)],
)
def test_anisotropic_axis(spacing: tuple, axis: int | None) -> None:
    assert anisotropic_axis(spacing) == axis


def test_target_spacing_tightens_the_coarse_axis_not_the_finest() -> None:
    z = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    # median z = 5 (ratio 6.25 >= 3); 10th percentile of z = 1 + 0.9 * (2 - 1) = 1.9.
    assert target_spacing([[s, 0.8, 0.8] for s in z]) == pytest.approx([1.9, 0.8, 0.8])
    assert target_spacing([[0.8, 0.8, s] for s in z]) == pytest.approx([0.8, 0.8, 1.9])


def test_target_spacing_isotropic_is_the_median() -> None:
    assert target_spacing([[1.0, 0.5, 0.5], [2.0, 1.0, 1.0], [1.5, 0.7, 0.9]]) == pytest.approx([1.5, 0.7, 0.9])


def test_target_spacing_never_finer_than_other_axes() -> None:
    # 10th percentile of z is 0.2, finer than y/x at 1.0 -> clamped to 1.0.
    assert target_spacing([[0.2, 1, 1], [0.2, 1, 1], [5, 1, 1], [5, 1, 1], [5, 1, 1]]) == pytest.approx([1, 1, 1])


def test_task04_uses_msd_preset() -> None:
    ds = dataset("Task04_Hippocampus")
    fp = fingerprint(ds.name, [[1.0, 1.0, 1.0]] * 3, [[36, 50, 35]] * 3)
    plans = make_plans(ds, fp, dim=3)
    assert plans.preset == "msd"
    assert plans.patch_size == (40, 56, 40) and plans.spacing == (1.0, 1.0, 1.0)
    assert plans.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    assert plans.kernels == ((3, 3, 3),) * 4 and plans.filters == (32, 64, 128, 256)
    assert plans.normalization == Normalization(("mri",))
    assert plans.in_channels == 1 and plans.n_classes == 3
    assert plans.labels == {"0": "background", "1": "class1", "2": "class2"}
    assert plans.anisotropic_axis is None and plans.min_fmap == 4 and plans.max_depth == 6
    plans_2d = make_plans(ds, fp, dim=2)
    assert plans_2d.patch_size == (56, 40) and plans_2d.spacing == (1.0, 1.0, 1.0)
    assert plans_2d.kernels == ((3, 3),) * 4 and plans_2d.strides[0] == (1, 1)


@pytest.mark.parametrize("name, modalities, n_classes, why", [
    ("Task04_MyBrains", ("MRI",), 3, "not an MSD task folder name"),  # the number alone is not the task
    ("Task03_Liver", ("CT",), 2, "has 1 channels / 2 classes, the MSD task has 1 / 3"),
    ("Task01_BrainTumour", ("T1",), 4, "has 1 channels / 4 classes, the MSD task has 4 / 4"),
])
def test_msd_preset_needs_the_task_name_and_counts(name, modalities, n_classes, why) -> None:
    ds = dataset(name, modalities, n_classes)
    fp = fingerprint(ds.name, [[1.0, 1.0, 1.0]] * 3, [[100, 100, 100]] * 3,
                     ct_stats={"n_samples": 5, "mean": 1.0, "std": 2.0, "percentile_00_5": 0.0, "percentile_99_5": 3.0})
    plans = make_plans(ds, fp, dim=3)
    assert plans.preset == "auto" and plans.patch_size != tuple(MSD_PRESETS[4].patch_3d)
    assert plans.normalization.ct_mean in (None, 1.0)  # never the liver preset's 99.4
    preset, reason = match_preset(name, len(modalities), n_classes)
    assert preset is None and why in reason and reason.endswith("planned from the fingerprint")


def test_msd_preset_reason_when_it_matches() -> None:
    preset, reason = match_preset("Task04_Hippocampus", 1, 3)
    assert preset is MSD_PRESETS[4] and "preset" in reason


def test_msd_ct_task_uses_preset_statistics() -> None:
    ds = dataset("Task09_Spleen", ("CT",), 2)
    fp = fingerprint(ds.name, [[5.0, 0.79, 0.79]] * 2, [[90, 512, 512]] * 2,
                     ct_stats={"n_samples": 5, "mean": 1.0, "std": 2.0, "percentile_00_5": 0.0, "percentile_99_5": 3.0})
    plans = make_plans(ds, fp, dim=3)
    assert plans.normalization == Normalization(("ct",), ct_min=-41.0, ct_max=176.0, ct_mean=99.29, ct_std=39.47)
    assert plans.patch_size == (64, 192, 160) and plans.spacing == (1.6, 0.79, 0.79)
    assert plans.anisotropic_axis == 0  # the data (5 mm slices) is anisotropic even if the target is not


def test_auto_plan_isotropic_hand_checked() -> None:
    ds = dataset()
    fp = fingerprint(ds.name, [[1.0, 1.0, 1.0]] * 3, [[100, 100, 100]] * 3)
    plans = make_plans(ds, fp, dim=3)
    # 100 -> 4 strides (100, 50, 25, 12.5 >= 8) -> rounded up to a multiple of 16 -> 112; 112^3 fits the budget.
    assert plans.preset == "auto" and plans.patch_size == (112, 112, 112)
    assert plans.spacing == (1.0, 1.0, 1.0) and plans.filters == (32, 64, 128, 256, 320)
    # Budget 0.5 Mvox: cut the longest-in-mm axis one stride multiple at a time (worked by hand).
    assert make_plans(ds, fp, dim=3, memory_budget_mvox=0.5).patch_size == (64, 80, 80)


def test_auto_patch_rounds_the_median_up_like_nnunet_v2() -> None:
    # A brain MRI task: median resampled shape 69 x 99 x 85 at 1 mm. nnU-Net v2 plans 80 x 112 x 96 (each edge
    # up to a multiple of 16), so the median case is one window; rounding down gave 64 x 96 x 80 (8 windows).
    ds = dataset()
    fp = fingerprint(ds.name, [[1.0, 1.0, 1.0]] * 3, [[69, 99, 85]] * 3)
    assert make_plans(ds, fp, dim=3).patch_size == (80, 112, 96)
    assert make_plans(ds, fp, dim=2).patch_size == (112, 96)  # 99 x 85: 5 strides in-plane -> multiples of 16


def test_auto_patch_rounds_down_when_up_does_not_fit() -> None:
    # 112^3 = 1.40 Mvox > 1.2 Mvox: the rounded-up patch does not fit, so the old path (round down) is taken.
    assert auto_patch_size([100, 100, 100], [1.0, 1.0, 1.0], budget=1_200_000) == [96, 96, 96]


def test_default_3d_budget_holds_the_largest_reference_preset() -> None:
    # Task02/06's 80 x 192 x 160 (2.46 Mvox) is larger than Task01/03's 128^3.
    assert DEFAULT_BUDGET[3] >= max(math.prod(p.patch_3d) for p in MSD_PRESETS.values()) >= 128**3


def test_auto_plan_anisotropic_within_budget_and_divisible() -> None:
    ds = dataset()
    spacings = [[5.0, 0.8, 0.8]] * 5 + [[3.0, 0.7, 0.7]] * 5
    fp = fingerprint(ds.name, spacings, [[36, 400, 420]] * 10)
    for dim, budget in ((3, DEFAULT_BUDGET[3]), (2, 512**2)):
        plans = make_plans(ds, fp, dim=dim)
        patch, strides, kernels = plans.patch_size, plans.strides, plans.kernels
        assert len(patch) == dim and all(len(k) == dim for k in kernels + strides)
        assert math.prod(patch) <= budget
        assert all(p % s == 0 for p, s in zip(patch, total_stride(strides)))
        assert len(kernels) == len(strides) == len(plans.filters)
        assert plans.spacing == pytest.approx([3.0, 0.75, 0.75]) and plans.anisotropic_axis == 0
    plans = make_plans(ds, fp, dim=3)
    assert plans.kernels[0] == (1, 3, 3) and plans.strides[1] == (1, 2, 2)  # z is 4x coarser at first
    assert plans.patch_size == (48, 192, 256)  # median 48 x 400 x 420 cut to the 2.46 Mvox default budget


def test_auto_patch_size_respects_custom_budget_and_minimum() -> None:
    assert auto_patch_size([300, 300, 300], [1.0, 1.0, 1.0], budget=10**6) == [96, 96, 96]
    assert auto_patch_size([3, 200, 200], [1.0, 1.0, 1.0], budget=1) == [8, 8, 8]


def test_auto_ct_uses_fingerprint_statistics() -> None:
    ds = dataset(modalities=("CT",), n_classes=2)
    stats = {"n_samples": 10, "mean": 40.0, "std": 12.5, "percentile_00_5": -80.0, "percentile_99_5": 250.0}
    plans = make_plans(ds, fingerprint(ds.name, [[1, 1, 1]] * 2, [[64, 64, 64]] * 2, ct_stats=stats), dim=3)
    assert plans.normalization == Normalization(("ct",), ct_min=-80.0, ct_max=250.0, ct_mean=40.0, ct_std=12.5)


def test_multi_phase_ct_keeps_statistics_per_channel() -> None:
    ds = dataset(modalities=("CT", "CT", "noNorm"), n_classes=2)
    plain = {"n_samples": 10, "mean": 40.0, "std": 12.5, "percentile_00_5": -80.0, "percentile_99_5": 250.0}
    arterial = {"n_samples": 10, "mean": 150.0, "std": 60.0, "percentile_00_5": -20.0, "percentile_99_5": 420.0}
    prior = {"n_samples": 10, "mean": 1.0, "std": 0.0, "percentile_00_5": 1.0, "percentile_99_5": 1.0}
    base = fingerprint(ds.name, [[1, 1, 1]] * 2, [[64, 64, 64]] * 2)
    plans = make_plans(ds, dataclasses.replace(base, intensity=(plain, arterial, prior)), dim=3)
    assert plans.normalization == Normalization(("ct", "ct", "nonorm"), ct_min=-80.0, ct_max=250.0, ct_mean=40.0,
                                                ct_std=12.5, more_ct=((1, -20.0, 420.0, 150.0, 60.0),))
    assert plans.normalization.ct_statistics(1) == (-20.0, 420.0, 150.0, 60.0)
    assert plans.normalization.to_json()["more_ct"] == ((1, -20.0, 420.0, 150.0, 60.0),)


def test_auto_ct_without_foreground_raises() -> None:
    ds = dataset(modalities=("CT",), n_classes=2)
    with pytest.raises(DatasetError, match="foreground"):
        make_plans(ds, fingerprint(ds.name, [[1, 1, 1]] * 2, [[64, 64, 64]] * 2), dim=3)


@pytest.mark.parametrize(
    ("options", "flag"),
    [({"dim": 4}, "--dim"), ({"dim": 3, "min_fmap": 0}, "--min-fmap"), ({"dim": 3, "max_depth": 0}, "--max-depth"),
     ({"dim": 3, "memory_budget_mvox": -1.0}, "--memory-budget-mvox")],
)
def test_bad_options_name_the_flag(options: dict, flag: str) -> None:
    ds = dataset()
    with pytest.raises(ConfigError, match=flag):
        make_plans(ds, fingerprint(ds.name, [[1, 1, 1]], [[64, 64, 64]]), **options)


def test_fingerprint_of_another_dataset_rejected() -> None:
    with pytest.raises(ValueError, match="Other"):
        make_plans(dataset(), fingerprint("Other", [[1, 1, 1]], [[64, 64, 64]]), dim=3)


def test_preset_plans_task04_3d_matches_reference_geometry():
    from nnunet_ray.planning.presets import preset_plans

    plans = preset_plans(4, 3)
    assert plans.patch_size == (40, 56, 40) and plans.in_channels == 1 and plans.n_classes == 3
    assert plans.strides[0] == (1, 1, 1) and len(plans.filters) == len(plans.strides)


def test_auto_patch_rounds_to_strides_before_cutting_an_axis():
    # Prostate-like: median 21 x 320 x 320 exceeds 128^3 only until z is rounded down to 20.
    from nnunet_ray.planning.plans import auto_patch_size

    assert auto_patch_size([21, 320, 320], [3.6, 0.62, 0.62], budget=128**3) == [20, 320, 320]
