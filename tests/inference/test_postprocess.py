"""Keeping the largest connected component of chosen classes."""

import numpy as np

from nnunet_ray.inference.postprocess import keep_largest_component


def test_only_the_largest_component_of_the_chosen_classes_stays():
    label = np.zeros((5, 8, 8), np.uint8)
    label[1:4, 1:4, 1:4] = 1  # 27 voxels
    label[0, 7, 7] = 1  # a stray island of class 1
    label[4, 5:7, 5:7] = 2  # class 2: two islands, not chosen
    label[0, 0, 5] = 2
    label[3, 4, 4] = 1  # touches the big block only by a corner: 26-connected, so it stays
    out = keep_largest_component(label, [1])
    expected = label.copy()
    expected[0, 7, 7] = 0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == label.dtype and label[0, 7, 7] == 1  # the input is untouched
    np.testing.assert_array_equal(keep_largest_component(label, []), label)
