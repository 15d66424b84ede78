"""Nonzero bounding box and cropping."""

import numpy as np
import pytest

from nnunet_ray.preprocessing.crop import crop_to_box, nonzero_box


def test_box_is_half_open_and_hand_checked():
    image = np.zeros((1, 5, 6, 7), np.float32)
    image[0, 1, 2, 3] = 1.0
    image[0, 3, 4, 5] = 2.0
    assert nonzero_box(image) == [[1, 4], [2, 5], [3, 6]]


def test_box_unites_channels():
    image = np.zeros((2, 4, 4, 4), np.float32)
    image[0, 0, 1, 1] = 1.0
    image[1, 2, 3, 2] = 1.0
    assert nonzero_box(image) == [[0, 3], [1, 4], [1, 3]]


def test_negative_values_count_as_foreground():
    # CT: body at negative HU must not be cropped away (the reference's "> 0" would do so).
    image = np.zeros((1, 4, 4, 4), np.float32)
    image[0, 1:3, 1:3, 1:3] = -800.0
    image[0, 2, 2, 2] = 40.0
    assert nonzero_box(image) == [[1, 3], [1, 3], [1, 3]]


def test_full_box_when_border_is_nonzero():
    image = np.ones((1, 3, 2, 5), np.float32)
    assert nonzero_box(image) == [[0, 3], [0, 2], [0, 5]]


def test_empty_image_raises():
    with pytest.raises(ValueError, match="no nonzero voxel"):
        nonzero_box(np.zeros((1, 3, 3, 3), np.float32))


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match="C, Z, Y, X"):
        nonzero_box(np.ones((3, 3, 3), np.float32))


def test_crop_to_box_cuts_spatial_axes_only():
    array = np.arange(2 * 4 * 5 * 6).reshape(2, 4, 5, 6)
    cropped = crop_to_box(array, [[1, 3], [0, 5], [2, 4]])
    assert cropped.shape == (2, 2, 5, 2)
    assert cropped[1, 0, 0, 0] == array[1, 1, 0, 2]
    np.testing.assert_array_equal(cropped, array[:, 1:3, :, 2:4])
