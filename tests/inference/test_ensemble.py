"""Ensemble prediction: sliding window vs a direct forward, padding, probabilities, averaging of members."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnunet_ray.config import ConfigError
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.inference.ensemble import EnsemblePredictor, WindowOptions, model_probabilities
from nnunet_ray.inference.members import check_compatible, load_member
from nnunet_ray.preprocessing.case import preprocess_for_prediction
from nnunet_ray.preprocessing.inverse import restore_probabilities

CPU = torch.device("cpu")


def _window(member) -> dict:
    return {"patch_size": member.patch_size, "n_classes": member.n_classes}


def test_patch_sized_volume_equals_a_direct_forward(checkpoint_3d):
    member = load_member(checkpoint_3d)
    model, patch = member.build(), member.patch_size
    image = torch.randn(1, member.in_channels, *patch)
    probs = model_probabilities(model, image[0].numpy(), **_window(member), device=CPU)
    with torch.no_grad():
        direct = torch.softmax(model(image), dim=1)[0]
    assert probs.shape == direct.shape
    assert torch.allclose(probs, direct, atol=1e-5)


def test_volume_smaller_than_the_patch_is_padded_and_cropped_back(checkpoint_3d):
    member = load_member(checkpoint_3d)
    model = member.build()
    assert member.patch_size == [8, 16, 16]
    image = torch.randn(1, 1, 5, 16, 11)
    probs = model_probabilities(model, image[0].numpy(), **_window(member), device=CPU)
    # Zero padding split evenly (floor before): Z 3 -> 1 before, 2 after; X 5 -> 2 before, 3 after.
    padded = F.pad(image, [2, 3, 0, 0, 1, 2])
    with torch.no_grad():
        direct = torch.softmax(model(padded), dim=1)[0, :, 1:6, :, 2:13]
    assert probs.shape == (member.n_classes, 5, 16, 11)
    assert torch.allclose(probs, direct, atol=1e-5)


@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_sum_to_one_with_and_without_tta(checkpoint_3d, tta):
    member = load_member(checkpoint_3d)
    image = np.random.default_rng(0).standard_normal((1, 11, 20, 18)).astype(np.float32)
    probs = model_probabilities(member.build(), image, **_window(member), device=CPU, options=WindowOptions(tta=tta))
    assert probs.min() >= 0 and torch.allclose(probs.sum(0), torch.ones(11, 20, 18), atol=1e-5)


def test_accumulators_on_the_cpu_give_the_same_probabilities(checkpoint_3d):
    member = load_member(checkpoint_3d)
    image = np.random.default_rng(1).standard_normal((1, 9, 21, 17)).astype(np.float32)
    same = model_probabilities(member.build(), image, **_window(member), device=CPU)
    split = model_probabilities(member.build(), image, **_window(member), device=CPU,
                                options=WindowOptions(sw_device="cpu"))
    assert split.device.type == "cpu" and torch.equal(same, split)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_windows_on_the_gpu_accumulate_in_host_memory(checkpoint_3d):
    member = load_member(checkpoint_3d)
    image = np.random.default_rng(2).standard_normal((1, 9, 21, 17)).astype(np.float32)
    gpu = torch.device("cuda")
    on_gpu = model_probabilities(member.build(gpu), image, **_window(member), device=gpu)
    split = model_probabilities(member.build(gpu), image, **_window(member), device=gpu,
                                options=WindowOptions(sw_device="cpu"))
    assert on_gpu.device.type == "cuda" and split.device.type == "cpu"
    assert torch.allclose(on_gpu.cpu(), split, atol=1e-5)


def test_an_ensemble_of_two_copies_equals_the_model(synth_task, checkpoint_3d):
    case = load_dataset(synth_task).test[0]
    one = EnsemblePredictor([load_member(checkpoint_3d)])(case)
    two = EnsemblePredictor([load_member(checkpoint_3d), load_member(checkpoint_3d)])(case)
    assert one.shape[0] == load_member(checkpoint_3d).n_classes
    np.testing.assert_allclose(two, one, atol=1e-6)


def test_single_member_is_its_restored_probabilities(synth_task, checkpoint_3d):
    case = load_dataset(synth_task).test[0]
    member = load_member(checkpoint_3d)
    image, props = preprocess_for_prediction(case, member.plans)
    expected = restore_probabilities(
        model_probabilities(member.build(), image, **_window(member), device=CPU).numpy(), props)
    got = EnsemblePredictor([member])(case)
    assert got.shape == (member.n_classes, *props.original_shape)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)


def test_2d_and_3d_members_average_on_the_original_grid(synth_task, checkpoint_3d, checkpoint_2d):
    case = load_dataset(synth_task).test[1]
    m3, m2 = load_member(checkpoint_3d), load_member(checkpoint_2d)
    assert (m3.dim, m2.dim) == (3, 2)
    p3, p2 = EnsemblePredictor([m3])(case), EnsemblePredictor([m2])(case)
    both = EnsemblePredictor([m3, m2])(case)
    assert p3.shape == p2.shape == both.shape
    np.testing.assert_allclose(both, (p3 + p2) / 2, atol=1e-6)


def test_members_with_different_classes_are_refused(checkpoint_3d):
    member = load_member(checkpoint_3d)
    other = dataclasses.replace(member, path="/other", plans=dataclasses.replace(member.plans, n_classes=2))
    with pytest.raises(ConfigError, match="--models: /other has n_classes 2"):
        check_compatible([member, other])


def test_each_member_predicts_in_the_autocast_dtype_it_trained_in(checkpoint_3d):
    """A model trained and validated with --amp-dtype bfloat16 is not predicted in fp16's narrower range on CUDA."""
    fp16, bf16 = load_member(checkpoint_3d), load_member(checkpoint_3d)
    bf16 = dataclasses.replace(bf16, config=dataclasses.replace(
        bf16.config, train=dataclasses.replace(bf16.config.train, amp_dtype="bfloat16")))
    (_, models), = EnsemblePredictor([fp16, bf16]).groups.values()
    assert [dtype for _, dtype in models] == [torch.float16, torch.bfloat16]
