"""CT and MRI intensity normalisation, hand-checked on tiny arrays."""

from dataclasses import replace

import numpy as np
import pytest

from nnunet_ray.planning.plans import channel_scheme
from nnunet_ray.planning.schema import Normalization
from nnunet_ray.preprocessing.normalize import normalize

CT = Normalization(("ct",), ct_min=-100.0, ct_max=200.0, ct_mean=50.0, ct_std=25.0)
MRI = Normalization(("mri",))
MRI2 = Normalization(("mri", "mri"))


def test_ct_clips_then_zscores():
    image = np.array([-1000.0, -100.0, 50.0, 100.0, 3000.0], np.float32).reshape(1, 1, 1, 5)
    out = normalize(image, CT)
    # clip -> [-100, -100, 50, 100, 200]; (x - 50) / 25
    np.testing.assert_allclose(out.ravel(), [-6.0, -6.0, 0.0, 2.0, 6.0])
    assert out.dtype == np.float32


def test_ct_zero_std_divides_by_one():
    image = np.array([10.0, 60.0], np.float32).reshape(1, 1, 1, 2)
    out = normalize(image, replace(CT, ct_std=0.0))
    np.testing.assert_allclose(out.ravel(), [-40.0, 10.0])


def test_ct_missing_statistics_raise():
    with pytest.raises(ValueError, match="ct_mean"):
        normalize(np.ones((1, 1, 1, 2), np.float32), replace(CT, ct_mean=None))


def test_mri_per_channel_over_nonzero_voxels():
    image = np.array([[0.0, 1.0, 3.0, 0.0], [2.0, 2.0, 0.0, 6.0]], np.float32).reshape(2, 1, 1, 4)
    out = normalize(image, MRI2)
    # channel 0: nonzero {1, 3}, mean 2, population std 1 -> [0, -1, 1, 0]
    # channel 1: nonzero {2, 2, 6}, mean 10/3, std sqrt(32/9) = 1.8856
    std1 = np.sqrt(((2 - 10 / 3) ** 2 * 2 + (6 - 10 / 3) ** 2) / 3)
    np.testing.assert_allclose(out[0].ravel(), [0.0, -1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[1].ravel(), [(2 - 10 / 3) / std1] * 2 + [0.0, (6 - 10 / 3) / std1], atol=1e-6)


def test_mri_constant_channel_and_empty_channel():
    image = np.array([[5.0, 5.0, 0.0], [0.0, 0.0, 0.0]], np.float32).reshape(2, 1, 1, 3)
    out = normalize(image, MRI2)
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # std 0 -> divide by 1


def test_mri_explicit_masks_are_per_channel_and_leave_outside_untouched():
    image = np.array([[1.0, 3.0, 7.0], [0.0, 4.0, 9.0]], np.float32).reshape(2, 1, 1, 3)
    masks = np.array([[True, True, False], [False, True, True]]).reshape(2, 1, 1, 3)
    out = normalize(image, MRI2, nonzero_masks=masks)
    np.testing.assert_allclose(out[0].ravel(), [-1.0, 1.0, 7.0])  # over {1, 3}: mean 2, std 1
    np.testing.assert_allclose(out[1].ravel(), [0.0, -1.0, 1.0])  # over {4, 9}: mean 6.5, std 2.5


def test_mri_does_not_modify_input():
    image = np.array([1.0, 3.0], np.float32).reshape(1, 1, 1, 2)
    normalize(image, MRI)
    np.testing.assert_array_equal(image.ravel(), [1.0, 3.0])


@pytest.mark.parametrize(
    "normalization, kwargs, match",
    [
        (Normalization(("pet",)), {}, "unknown normalization scheme"),
        (MRI, {"nonzero_masks": np.ones((2, 2, 2), bool)}, "nonzero_masks shape"),
    ],
)
def test_bad_arguments_raise(normalization, kwargs, match):
    with pytest.raises(ValueError, match=match):
        normalize(np.ones((1, 1, 1, 2), np.float32), normalization, **kwargs)


def test_mixed_ct_and_mri_channels_are_each_normalised_by_their_own_rule():
    """A CT/MR dataset: the reference clipped and scaled the MR channel with CT statistics."""
    ct = np.array([[[[-1000.0, 0.0, 100.0, 300.0]]]], np.float32)
    mr = np.array([[[[0.0, 2.0, 4.0, 6.0]]]], np.float32)
    norm = Normalization(("ct", "mri"), ct_min=-100.0, ct_max=200.0, ct_mean=50.0, ct_std=50.0)
    out = normalize(np.concatenate([ct, mr]), norm)
    np.testing.assert_allclose(out[0].ravel(), [-3.0, -1.0, 1.0, 3.0])  # clip to [-100, 200], then (x - 50) / 50
    mean, std = 4.0, np.sqrt(8.0 / 3.0)  # over the nonzero MR voxels 2, 4, 6
    np.testing.assert_allclose(out[1].ravel(), [0.0, (2 - mean) / std, 0.0, (6 - mean) / std], rtol=1e-6)


def test_channel_count_mismatch_with_plans_is_an_error():
    with pytest.raises(ValueError, match="2 channels"):
        normalize(np.ones((1, 1, 2, 2), np.float32), MRI2)


def test_nnunet_v2_channel_schemes_are_chosen_by_channel_name_and_hand_checked():
    """v2's channel_names (case-insensitive): CT, noNorm, rescale_to_0_1, rgb_to_0_1; anything else z-scores."""
    assert [channel_scheme(n) for n in ("CT", "ct", "noNorm", "NONORM", "rescale_to_0_1", "RGB_to_0_1", "zscore",
                                        "T2", "MRI")] == ["ct", "ct", "nonorm", "nonorm", "rescale_to_0_1",
                                                          "rgb_to_0_1", "mri", "mri", "mri"]
    prior = np.array([0.0, 1.0, 1.0, 1.0])  # a binary prior: a z-score over its nonzero voxels would zero it
    rescale = np.array([-2.0, 0.0, 2.0, 6.0])
    rgb = np.array([0.0, 51.0, 255.0, 300.0])  # 300: a resampling overshoot, clipped
    image = np.stack([prior, rescale, rgb]).reshape(3, 1, 1, 4).astype(np.float32)
    out = normalize(image, Normalization(("nonorm", "rescale_to_0_1", "rgb_to_0_1")))
    np.testing.assert_allclose(out[0].ravel(), [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(out[1].ravel(), [0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(out[2].ravel(), [0.0, 0.2, 1.0, 1.0])
    constant = normalize(np.full((1, 1, 1, 3), 7.0, np.float32), Normalization(("rescale_to_0_1",)))
    np.testing.assert_array_equal(constant.ravel(), [0.0, 0.0, 0.0])  # a flat range divides by 1e-8, not 0


def test_each_ct_channel_is_clipped_and_scaled_with_its_own_statistics():
    """Multi-phase CT: the arterial phase keeps its own foreground statistics (v2 keeps one set per channel)."""
    plain = np.array([[[[-200.0, 0.0, 100.0]]]], np.float32)
    arterial = np.array([[[[0.0, 300.0, 600.0]]]], np.float32)
    norm = Normalization(("ct", "ct"), ct_min=-100.0, ct_max=200.0, ct_mean=50.0, ct_std=50.0,
                         more_ct=((1, 0.0, 400.0, 200.0, 100.0),))
    out = normalize(np.concatenate([plain, arterial]), norm)
    np.testing.assert_allclose(out[0].ravel(), [-3.0, -1.0, 1.0])  # clip to [-100, 200], (x - 50) / 50
    np.testing.assert_allclose(out[1].ravel(), [-2.0, 1.0, 2.0])  # clip to [0, 400], (x - 200) / 100
