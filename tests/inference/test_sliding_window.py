"""Sliding window, Gaussian blending, slice-wise 2D and flip TTA, checked against hand-computed values."""

import math

import pytest
import torch

from nnunet_ray.inference.sliding_window import importance_map, predict_volume, sliding_window_predict, window_starts
from nnunet_ray.inference.tta import flip_combinations, flip_tta


@pytest.mark.parametrize("size, patch, overlap, expected", [
    (10, 4, 0.5, [0, 2, 4, 6]),
    (11, 4, 0.5, [0, 2, 4, 6, 7]),  # last window shifted back to end at the border
    (4, 4, 0.5, [0]),
    (10, 4, 0.0, [0, 4, 6]),
    (5, 4, 0.75, [0, 1]),
    (9, 3, 0.9, list(range(7))),  # step floors at 1
])
def test_window_starts(size, patch, overlap, expected):
    assert window_starts(size, patch, overlap) == expected


@pytest.mark.parametrize("size", range(4, 30))
def test_windows_cover_every_voxel(size):
    covered = set()
    for start in window_starts(size, 4, 0.5):
        covered.update(range(start, start + 4))
    assert covered == set(range(size))


def test_window_starts_rejects_axis_smaller_than_patch():
    with pytest.raises(ValueError, match="smaller than the patch"):
        window_starts(3, 4, 0.5)


def test_gaussian_importance_map_values():
    w = importance_map((8, 8))
    # sigma = 0.125 * 8 = 1 voxel, centre at 3.5: w = exp(-0.5 * (dy^2 + dx^2)) / exp(-0.5 * (0.25 + 0.25)).
    assert w.shape == (8, 8)
    assert w[3, 3] == pytest.approx(1.0)
    assert w[0, 3] == pytest.approx(math.exp(-6.0), rel=1e-5)
    assert w[0, 0] == pytest.approx(math.exp(-12.0), rel=1e-5)
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))


def test_constant_importance_map_and_bad_blend():
    assert torch.equal(importance_map((2, 3, 4), "constant"), torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="blend"):
        importance_map((4, 4), "median")


class WindowIndex:
    """A predictor whose output is the running index of the window (0, 1, ...), constant over the window."""

    def __init__(self, n_classes=1):
        self.seen = 0
        self.n_classes = n_classes

    def __call__(self, batch):
        out = torch.empty(batch.shape[0], self.n_classes, *batch.shape[2:])
        for i in range(batch.shape[0]):
            out[i] = self.seen
            self.seen += 1
        return out


@pytest.mark.parametrize("blend, expected_x2", [
    # x = 2 is local x 2 of window 0 and local x 0 of window 1; along X sigma = 0.5, centre 1.5:
    # w(local) = exp(-2 (local - 1.5)^2) -> w(2) = exp(-0.5), w(0) = exp(-4.5); the Y factor cancels.
    ("gaussian", (0 * math.exp(-0.5) + 1 * math.exp(-4.5)) / (math.exp(-0.5) + math.exp(-4.5))),
    ("constant", 0.5),
])
def test_blending_of_two_windows_by_hand(blend, expected_x2):
    image = torch.zeros(1, 1, 4, 6)  # windows of (4, 4) start at x = 0 and x = 2
    out = sliding_window_predict(image, WindowIndex(), patch_size=(4, 4), n_classes=1, blend=blend)
    assert out.shape == (1, 1, 4, 6)
    assert torch.allclose(out[0, 0, :, 0], torch.zeros(4))  # only window 0 covers x = 0, 1
    assert torch.allclose(out[0, 0, :, 5], torch.ones(4))  # only window 1 covers x = 4, 5
    assert out[0, 0, 1, 2].item() == pytest.approx(expected_x2, rel=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_constant_input_gives_the_constant(blend):
    image = torch.full((1, 1, 9, 10, 11), 3.25)
    out = sliding_window_predict(image, lambda b: b.repeat(1, 2, 1, 1, 1), patch_size=(4, 4, 4), n_classes=2,
                                 blend=blend)
    assert out.shape == (1, 2, 9, 10, 11)
    assert torch.allclose(out, torch.full_like(out, 3.25))


@pytest.mark.parametrize("shape", [(1, 2, 9, 10, 11), (1, 2, 3, 5, 6), (1, 2, 4, 4, 4)])
def test_pointwise_predictor_is_reproduced_exactly(shape):
    # A pointwise function of the input must come back unchanged wherever the windows fall (also with padding).
    image = torch.randn(shape)
    out = sliding_window_predict(image, lambda b: 2 * b + 1, patch_size=(4, 4, 4), n_classes=2)
    assert out.shape == shape
    assert torch.allclose(out, 2 * image + 1, atol=1e-5)


def test_windows_are_batched():
    calls = []

    def predictor(batch):
        calls.append(batch.shape[0])
        return batch

    sliding_window_predict(torch.zeros(1, 1, 8, 8, 8), predictor, patch_size=(4, 4, 4), n_classes=1, batch_size=4)
    assert calls == [4] * 6 + [3]  # 3 starts per axis -> 27 windows


def test_predictor_with_wrong_output_shape_is_rejected():
    with pytest.raises(ValueError, match="predictor returned"):
        sliding_window_predict(torch.zeros(1, 1, 4, 4), lambda b: b, patch_size=(4, 4), n_classes=3)


def test_image_rank_must_match_patch():
    with pytest.raises(ValueError, match="spatial axes"):
        sliding_window_predict(torch.zeros(1, 1, 4, 4), lambda b: b, patch_size=(4, 4, 4), n_classes=1)


def test_predict_volume_2d_runs_a_2d_predictor_slice_by_slice():
    image = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(1, 1, 3, 6, 8).contiguous()  # slice z holds value z
    shapes = []

    def per_slice_mean(batch):  # (B, C, Y, X) -> each window's own mean: mixes nothing across slices
        shapes.append(tuple(batch.shape[1:]))
        return batch.mean(dim=(2, 3), keepdim=True).expand_as(batch).repeat(1, 2, 1, 1)

    out = predict_volume(image, per_slice_mean, patch_size=(4, 4), n_classes=2)
    assert out.shape == (1, 2, 3, 6, 8)
    assert set(shapes) == {(1, 4, 4)}
    for z in range(3):
        assert torch.allclose(out[0, :, z], torch.full((2, 6, 8), float(z)))


def test_predict_volume_3d_and_bad_input():
    image = torch.randn(1, 1, 5, 6, 7)
    assert torch.allclose(predict_volume(image, lambda b: b, patch_size=(4, 4, 4), n_classes=1), image, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(1, C, Z, Y, X\)"):
        predict_volume(image[0], lambda b: b, patch_size=(4, 4, 4), n_classes=1)


def test_flip_combinations():
    assert flip_combinations(2) == [(), (2,), (3,), (2, 3)]
    combos = flip_combinations(3)
    assert len(combos) == len(set(combos)) == 8 and combos[0] == () and (2, 3, 4) in combos


def test_flip_tta_of_an_equivariant_predictor_is_its_softmax():
    batch = torch.randn(2, 3, 4, 4, 4)
    out = flip_tta(lambda b: b * 2, n_spatial=3)(batch)
    assert torch.allclose(out, torch.softmax(batch * 2, dim=1), atol=1e-6)


def test_flip_tta_averages_probabilities_by_hand():
    # The logits ignore the input: class 1 scores a ramp along X (0, 1). Passes that flip X see it reversed
    # after flipping back, so p1(x) = mean(sigmoid(x), sigmoid(1 - x)) over the 2 of 4 passes each.
    ramp = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 1, 3, 2)
    predictor = lambda b: torch.cat([torch.zeros_like(ramp), ramp], dim=1)  # noqa: E731
    out = flip_tta(predictor, n_spatial=2)(torch.zeros(1, 1, 3, 2))
    p1 = 0.5 * (1 / (1 + math.exp(0)) + 1 / (1 + math.exp(-1)))
    assert torch.allclose(out[0, 1], torch.full((3, 2), p1), atol=1e-6)
    assert torch.allclose(out.sum(1), torch.ones(1, 3, 2))
