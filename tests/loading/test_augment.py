"""Each augmentation through the real CPU pipeline, one at a time, on a volume exactly the patch size."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from nnunet_ray.loading.augment import Augmentations
from nnunet_ray.loading.pipelines import train_loader
from tests.conftest import make_test_plans

PLANS_3D = make_test_plans(dim=3, in_channels=2)
NONE = Augmentations.none()


def _run(case_writer, aug, batch_size=4):
    """(original image, label) of the only case and one augmented batch (the crop is the whole volume)."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 16, 16, 16)).astype(np.float32)
    label = (image[:1] > 1.0).astype(np.uint8)
    folder = case_writer("c", image, label)
    batch = train_loader(folder, ["c"], PLANS_3D, batch_size=batch_size, seed=0, augment=aug).next_batch()
    return torch.from_numpy(image), torch.from_numpy(label), batch


def test_no_augmentation_returns_the_crop_unchanged(case_writer):
    image, label, batch = _run(case_writer, False)
    assert torch.equal(batch["image"], image.expand(4, -1, -1, -1, -1))
    assert torch.equal(batch["label"], label.expand(4, -1, -1, -1, -1))


def test_noise_changes_image_only_with_bounded_sigma(case_writer):
    image, label, batch = _run(case_writer, replace(NONE, noise=1.0))
    noise = batch["image"] - image
    assert torch.equal(batch["label"], label.expand(4, -1, -1, -1, -1))
    assert (noise.flatten(1).std(1) < 0.36).all() and noise.abs().sum() > 0


def test_blur_smooths(case_writer):
    image, _, batch = _run(case_writer, replace(NONE, blur=1.0))
    assert (batch["image"].flatten(1).std(1) < 0.8 * image.std()).all()


def test_brightness_is_one_factor_per_sample_in_range(case_writer):
    image, _, batch = _run(case_writer, replace(NONE, brightness=1.0))
    ratio = (batch["image"] / image).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
    assert ((ratio[:, 0] >= 0.7) & (ratio[:, 0] <= 1.3)).all()


def test_contrast_is_clipped_to_the_sample_range(case_writer):
    image, _, batch = _run(case_writer, replace(NONE, contrast=1.0))
    out = batch["image"]
    assert out.min() >= image.min() and out.max() <= image.max()
    inside = (out > image.min()) & (out < image.max())
    factor = out[inside] / image.expand_as(out)[inside]
    assert factor.min() >= 0.65 - 1e-5 and factor.max() <= 1.5 + 1e-5


@pytest.mark.parametrize("aug", [Augmentations(), replace(Augmentations(), zoom=1.0, blur=1.0)])
def test_2d_blur_and_zoom_stay_in_plane(case_writer, aug):
    """Slices are frames: a per-slice constant image stays constant per slice, with its own integer value
    (a blur across the stacked slices would mix neighbouring values)."""
    image = np.broadcast_to(np.arange(10, dtype=np.float32)[None, :, None, None], (2, 10, 16, 16)).copy()
    label = np.zeros((1, 10, 16, 16), np.uint8)
    label[0, :, 8, 8] = 1
    folder = case_writer("s", image, label)
    plans = make_test_plans(dim=2, patch_size=[16, 16], in_channels=2)
    batch = train_loader(folder, ["s"], plans, batch_size=8, seed=0,
                         augment=replace(aug, noise=0.0, brightness=0.0, contrast=0.0)).next_batch()
    per_slice = batch["image"].flatten(1)
    assert torch.allclose(per_slice.std(1), torch.zeros(8), atol=1e-4)
    assert torch.allclose(per_slice[:, 0], per_slice[:, 0].round(), atol=1e-4)  # a whole slice value
