"""Target shapes, anisotropy detection, image and label resampling."""

import time

import numpy as np
import pytest

from nnunet_ray.preprocessing.resample import (
    anisotropic_axis,
    resample_image,
    resample_label,
    resampled_shape,
)


def _dice(a: np.ndarray, b: np.ndarray, c: int) -> float:
    x, y = a == c, b == c
    return 2.0 * np.logical_and(x, y).sum() / (x.sum() + y.sum())


def _phantom(shape, spacing) -> np.ndarray:
    """(1, Z, Y, X) label: a ball (1) holding a smaller ball (2), and a box (3); sizes in mm."""
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    centre = [n * s / 2 for n, s in zip(shape, spacing)]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    label = np.zeros(shape, np.uint8)
    label[r < 24] = 1
    label[r < 12] = 2
    box = (grid[0] < 16) & (grid[1] < 16) & (grid[2] < 16)
    label[box] = 3
    return label[None]


@pytest.mark.parametrize(
    "shape, spacing, target, expected",
    [
        ((10, 20, 30), (1.0, 0.5, 2.0), (1.5, 1.0, 1.0), (7, 10, 60)),  # 6.67 rounds to 7 (truncation: 6)
        ((3, 100, 100), (5.0, 0.7, 0.7), (5.0, 1.0, 1.0), (3, 70, 70)),
        ((2, 8, 8), (0.1, 1.0, 1.0), (1.0, 1.0, 1.0), (1, 8, 8)),  # 0.2 -> at least 1
        ((9, 9, 9), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (9, 9, 9)),
    ],
)
def test_resampled_shape_rounds(shape, spacing, target, expected):
    assert resampled_shape(shape, spacing, target) == expected


@pytest.mark.parametrize(
    "spacing, target, expected",
    [
        ((5.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0),  # thick source slices
        ((1.0, 1.0, 1.0), (1.0, 1.0, 4.0), 2),  # only the target is anisotropic
        ((0.8, 3.0, 0.9), (1.0, 1.0, 1.0), 1),  # the coarse axis need not be axis 0
        ((3.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0),  # ratio exactly 3 counts
        ((1.0, 1.0, 2.9), (1.0, 1.0, 1.0), None),
        ((3.0, 3.0, 1.0), (1.0, 1.0, 1.0), None),  # two equally coarse axes: plain 3D
        ((1.0, 1.0, 4.0), (4.0, 1.0, 1.0), 2),  # the source decides first
    ],
)
def test_anisotropic_axis(spacing, target, expected):
    assert anisotropic_axis(spacing, target) == expected


def test_image_same_shape_is_untouched():
    image = np.random.default_rng(0).random((2, 4, 5, 6)).astype(np.float64)
    out = resample_image(image, (4, 5, 6), aniso_axis=None)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32))


def test_image_cubic_keeps_constants_and_shape():
    image = np.full((2, 6, 7, 8), 3.5, np.float32)
    image[1] = -2.0
    out = resample_image(image, (9, 5, 12), aniso_axis=None)
    assert out.shape == (2, 9, 5, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 3.5, atol=1e-5)
    np.testing.assert_allclose(out[1], -2.0, atol=1e-5)


def test_image_cubic_reproduces_a_smooth_ramp_inside():
    z = np.arange(32, dtype=np.float32)
    image = np.broadcast_to(z[:, None, None], (32, 4, 4))[None].copy()
    out = resample_image(image, (64, 4, 4), aniso_axis=None)
    # centre-aligned: output voxel i sits at input coordinate (i + 0.5) / 2 - 0.5; the edge-repeat
    # boundary rings a few voxels into the volume, so only the inside is exact
    expected = (np.arange(64) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(out[0, 16:-16, 2, 2], expected[16:-16], atol=1e-3)


def test_image_anisotropic_axis_takes_nearest_slice():
    # Slice k along x holds the value k; x is the coarse axis, so x is resized by nearest neighbour.
    image = np.broadcast_to(np.arange(4, dtype=np.float32), (1, 5, 6, 4)).copy()
    out = resample_image(image, (10, 3, 8), aniso_axis=2)
    assert out.shape == (1, 10, 3, 8)
    np.testing.assert_allclose(out[0, 3, 1], [0, 0, 1, 1, 2, 2, 3, 3], atol=1e-5)


def test_label_same_shape_is_untouched():
    label = np.random.default_rng(0).integers(0, 3, (1, 3, 4, 5)).astype(np.uint8)
    np.testing.assert_array_equal(resample_label(label, (3, 4, 5), n_classes=3, aniso_axis=None), label)


def test_label_upsample_hand_checked():
    label = np.zeros((1, 1, 1, 4), np.uint8)
    label[0, 0, 0, 2:] = 1
    out = resample_label(label, (1, 1, 8), n_classes=2, aniso_axis=None)
    assert out.dtype == np.uint8
    # linear mask at centres 0.5*(i+0.5)-0.5: [.., 0.25 at 1.75 -> 0, 0.75 at 2.25 -> 1]
    np.testing.assert_array_equal(out.ravel(), [0, 0, 0, 0, 1, 1, 1, 1])


def test_label_later_classes_overwrite():
    # A voxel where two masks pass 0.5 takes the later class.
    label = np.array([1, 2], np.uint8).reshape(1, 1, 1, 2)
    out = resample_label(label, (1, 1, 3), n_classes=3, aniso_axis=None)
    np.testing.assert_array_equal(out.ravel(), [1, 2, 2])  # centre voxel: mask1 = mask2 = 0.5


@pytest.mark.parametrize(
    "spacing, target",
    [
        ((1.0, 1.0, 1.0), (0.7, 1.3, 1.1)),  # isotropic, up and down at once
        ((1.0, 1.0, 1.0), (1.6, 1.6, 1.6)),  # coarser and back
        ((4.0, 0.8, 0.8), (2.5, 1.1, 1.2)),  # anisotropic source (axis 0)
        ((0.9, 0.9, 3.5), (0.7, 1.2, 3.5)),  # anisotropic along x, x unchanged
    ],
)
def test_label_round_trip_keeps_dice(spacing, target):
    shape = tuple(int(round(64 / s)) for s in spacing)
    label = _phantom(shape, spacing)
    axis = anisotropic_axis(spacing, target)
    there = resampled_shape(shape, spacing, target)
    moved = resample_label(label, there, n_classes=4, aniso_axis=axis)
    back = resample_label(moved, shape, n_classes=4, aniso_axis=axis)
    assert moved.shape == (1, *there) and back.shape == label.shape
    for c in (1, 2, 3):
        assert _dice(back, label, c) >= 0.95, (c, _dice(back, label, c))


def test_anisotropic_label_matches_per_slice_resize():
    # With the coarse axis unchanged, every slice is resized independently: slice 0 empty stays empty.
    label = np.zeros((1, 3, 10, 10), np.uint8)
    label[0, 1:, 2:8, 2:8] = 1
    out = resample_label(label, (3, 20, 20), n_classes=2, aniso_axis=0)
    assert out[0, 0].sum() == 0
    assert out[0, 1].sum() == out[0, 2].sum() == 12 * 12


def test_64_cube_is_fast():
    rng = np.random.default_rng(0)
    image = rng.random((1, 64, 64, 64)).astype(np.float32)
    label = _phantom((64, 64, 64), (1.0, 1.0, 1.0))
    start = time.perf_counter()
    resample_image(image, (80, 50, 70), aniso_axis=None)
    resample_label(label, (80, 50, 70), n_classes=4, aniso_axis=None)
    assert time.perf_counter() - start < 2.0  # ~0.15 s alone; loose for a shared CPU
