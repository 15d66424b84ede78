"""Dice, HD95 and NSD against closed forms (two offset spheres on an anisotropic grid) and hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_ray.evaluation.surface import case_metrics, face_areas, weighted_percentile


def _two_spheres(spacing, radius, offset, axis):
    """Balls of ``radius`` mm whose centres are ``offset`` mm apart along ``axis``, on a grid of ``spacing``."""
    shape = [int(np.ceil((2 * radius + offset + 6) / s)) for s in spacing]
    grid = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    shift = np.zeros(3)
    shift[axis] = offset / 2
    a = sum((g + o) ** 2 for g, o in zip(grid, shift)) <= radius**2
    b = sum((g - o) ** 2 for g, o in zip(grid, shift)) <= radius**2
    return a.astype(np.uint8), b.astype(np.uint8)


@pytest.mark.parametrize("spacing, axis", [((1.5, 0.6, 0.8), 0), ((1.5, 0.6, 0.8), 2), ((2.0, 0.5, 0.5), 1)])
@pytest.mark.parametrize("tolerance", [2.0, 3.0])
def test_offset_spheres_match_closed_forms(spacing, axis, tolerance):
    r, d = 12.0, 6.0
    pred, label = _two_spheres(spacing, r, d, axis)
    m = case_metrics(pred, label, spacing, 2, tolerance=tolerance)[0]
    # Dice = lens volume / ball volume = (4r + d)(2r - d)^2 / (16 r^3).
    assert m["dice"] == pytest.approx((4 * r + d) * (2 * r - d) ** 2 / (16 * r**3), abs=0.01)
    # A point of one sphere's surface at polar cosine u (uniform over the area) lies |sqrt(r^2 + d^2 - 2rdu) - r|
    # from the other sphere's surface: that distance is uniform on [0, d], so HD95 = 0.95 d and NSD(tau) = tau / d.
    assert m["hd95"] == pytest.approx(0.95 * d, abs=max(spacing) / 2)
    assert m["nsd"] == pytest.approx(tolerance / d, abs=0.07)


def test_identical_masks_are_perfect():
    label = np.zeros((6, 7, 8), np.uint8)
    label[1:4, 2:6, 3:7] = 1
    assert case_metrics(label, label, (3.0, 1.0, 1.0), 2)[0] == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}


def test_shift_by_one_slice_by_hand():
    # Two 3x3x3 cubes one z slice apart, z spacing 2 mm: every border voxel of the non-overlapping slices is 2 mm
    # from the other border; the shared middle slice's ring is on both borders (distance 0).
    pred, label = np.zeros((2, 7, 5, 5), np.uint8)
    pred[1:4, 1:4, 1:4] = 1
    label[2:5, 1:4, 1:4] = 1
    m = case_metrics(pred, label, (2.0, 1.0, 1.0), 2, tolerance=1.0)[0]
    assert m["dice"] == pytest.approx(2 * 18 / 54)
    assert m["hd95"] == pytest.approx(2.0)
    # Border areas (mm^2) of each cube: end slices 9 x 1 (end faces) + 4 corners x 2 sides x 2 + 4 edges x 2 = 33,
    # middle ring 4 x 4 + 4 x 2 = 24; total 90. Within 1 mm of the other border: all but the far end slice
    # (the shared slices lie on both borders, the top centre voxel is 1 mm from the ring), 57 of 90, both ways.
    assert m["nsd"] == pytest.approx(2 * 57 / 180)


def test_absent_classes_follow_the_dice_rule():
    label = np.zeros((4, 5, 6), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    pred = label.copy()
    pred[0, 0, 0] = 3  # class 3 predicted but absent from the label; class 2 absent from both
    m = case_metrics(pred, label, (2.0, 1.0, 1.0), 4)
    assert m[1] == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    diagonal = float(np.linalg.norm([8.0, 5.0, 6.0]))
    assert m[2] == {"dice": 0.0, "hd95": pytest.approx(diagonal), "nsd": 0.0}


def test_face_areas_by_hand():
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1:3] = True  # two voxels along x; the second touches the volume's edge
    area = face_areas(mask, (3.0, 2.0, 1.0))
    # Each voxel: 2 z-faces (2*1 mm^2), 2 y-faces (3*1), and its one x-face not shared (3*2).
    assert area[1, 1, 1] == area[1, 1, 2] == 2 * 2 + 2 * 3 + 6
    assert area.sum() == 2 * (4 + 6 + 6)


def test_weighted_percentile():
    values = np.array([3.0, 1.0, 2.0, 10.0])
    assert weighted_percentile(values, np.ones(4), 50) == 2.0
    assert weighted_percentile(values, np.array([1.0, 1.0, 1.0, 97.0]), 95) == 10.0
    assert weighted_percentile(values, np.array([1.0, 1.0, 1.0, 0.0]), 95) == 3.0
