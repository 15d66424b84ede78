"""Dice + CE / focal loss and the deep-supervision wrapper, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from nnunet_ray.model.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights, downsample_label

S = 1e-5  # smooth


def logits_from_probs(probs: list[list[float]]) -> torch.Tensor:
    """(V voxels x K) probabilities -> (1, K, V) logits whose softmax gives exactly these probabilities."""
    return torch.tensor(probs, dtype=torch.float64).log().T.unsqueeze(0).float()


# Two voxels, three classes; labels 0 and 2.
PROBS = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]
LABEL = torch.tensor([[[0, 2]]], dtype=torch.uint8)  # (1, 1, 2)
# Foreground Dice only: class 1 absent from the label (I=0, P=0.8, Y=0); class 2 (I=0.3, P=0.4, Y=1).
DICE = ((1 - S / (0.8 + S)) + (1 - (2 * 0.3 + S) / (1.4 + S))) / 2


def test_dice_ce_by_hand() -> None:
    ce = -(math.log(0.7) + math.log(0.3)) / 2
    loss = DiceCELoss()(logits_from_probs(PROBS), LABEL)
    assert loss.item() == pytest.approx(DICE + ce, rel=1e-5)


def test_dice_focal_by_hand() -> None:
    focal = -((1 - 0.7) ** 2 * math.log(0.7) + (1 - 0.3) ** 2 * math.log(0.3)) / 2
    loss = DiceCELoss(focal=True)(logits_from_probs(PROBS), LABEL)
    assert loss.item() == pytest.approx(DICE + focal, rel=1e-5)


def test_dice_is_batch_dice() -> None:
    # The same two voxels as two one-voxel samples: sums run over the batch, so the loss is unchanged.
    logits = logits_from_probs(PROBS)  # (1, 3, 2)
    as_batch = logits.permute(2, 1, 0)  # (2, 3, 1)
    label = LABEL.permute(2, 1, 0)  # (2, 1, 1)
    assert DiceCELoss()(as_batch, label).item() == pytest.approx(DiceCELoss()(logits, LABEL).item(), rel=1e-6)


LABEL_3D = torch.tensor([0, 1, 2, 1, 0, 2, 2, 0], dtype=torch.uint8).view(1, 1, 2, 2, 2)  # class 1: 2, class 2: 3


def onehot_logits(label: torch.Tensor, margin: float, n_classes: int = 3) -> torch.Tensor:
    return margin * torch.nn.functional.one_hot(label[:, 0].long(), n_classes).movedim(-1, 1).float()


@pytest.mark.parametrize("focal", [False, True])
def test_perfect_confident_prediction_is_near_zero(focal: bool) -> None:
    assert DiceCELoss(focal=focal)(onehot_logits(LABEL_3D, 20.0), LABEL_3D).item() == pytest.approx(0.0, abs=1e-6)


def test_correct_prediction_with_margin_by_hand() -> None:
    # Margin 5: p_true = q, each other class r = q * e^-5 on every voxel; CE = -log q.
    q = 1 / (1 + 2 * math.exp(-5))
    r = q * math.exp(-5)
    dice = [1 - (2 * n * q + S) / (n * q + (8 - n) * r + n + S) for n in (2, 3)]
    expected = sum(dice) / 2 - math.log(q)
    assert DiceCELoss()(onehot_logits(LABEL_3D, 5.0), LABEL_3D).item() == pytest.approx(expected, rel=1e-5)


def test_uniform_prediction_2d() -> None:
    # Zero logits, 2 classes: p = 0.5 everywhere. Class 1 on 2 of 4 pixels: I = 1, P = 2, Y = 2.
    label = torch.tensor([[0, 1], [1, 0]]).view(1, 1, 2, 2)
    loss = DiceCELoss()(torch.zeros(1, 2, 2, 2), label).item()
    assert loss == pytest.approx(1 - (2 + S) / (4 + S) + math.log(2), rel=1e-6)


def test_loss_is_float32_and_differentiable_from_bf16() -> None:
    logits = torch.randn(2, 3, 4, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    label = torch.randint(0, 3, (2, 1, 4, 4, 4), dtype=torch.uint8)
    loss = DiceCELoss()(logits, label)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad is not None


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be"):
        DiceCELoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 2, dtype=torch.long))


class _MeanLoss(torch.nn.Module):
    """Stand-in base loss: mean logit, recording the labels it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[torch.Tensor] = []

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        self.labels.append(label)
        return logits.mean()


def test_deep_supervision_weights_and_label_sizes() -> None:
    base = _MeanLoss()
    label = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    outputs = [torch.full((1, 2, 4, 4), 1.0), torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 1, 1), 4.0)]
    loss = DeepSupervisionLoss(base)(outputs, label)
    assert loss.item() == pytest.approx((1.0 + 0.5 * 2.0 + 0.25 * 4.0) / 1.75)
    assert [tuple(y.shape) for y in base.labels] == [(1, 1, 4, 4), (1, 1, 2, 2), (1, 1, 1, 1)]
    assert base.labels[1].flatten().tolist() == [0, 2, 8, 10]  # nearest: every second row and column
    assert base.labels[1].dtype == torch.uint8


@pytest.mark.parametrize("n_levels, scheme, expected", [
    # nnU-Net v2 (nnUNetTrainer._build_loss): 1/2^i, the lowest resolution 0, normalised.
    (4, "nnunetv2", [4 / 7, 2 / 7, 1 / 7, 0.0]),
    (5, "nnunetv2", [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0]),
    (2, "nnunetv2", [1.0, 0.0]),
    (1, "nnunetv2", [1.0]),  # a single output keeps its weight (v2 would divide by 0)
    # The reference: the main output and the two next coarser levels, 1/2^i normalised.
    (5, "dle", [4 / 7, 2 / 7, 1 / 7, 0.0, 0.0]),
    (2, "dle", [2 / 3, 1 / 3]),
])
def test_deep_supervision_weights_per_level(n_levels, scheme, expected) -> None:
    assert deep_supervision_weights(n_levels, scheme) == pytest.approx(expected)


def test_deep_supervision_loss_takes_given_weights() -> None:
    base, label = _MeanLoss(), torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    outputs = [torch.full((1, 2, 4, 4), 1.0), torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 1, 1), 4.0)]
    weights = deep_supervision_weights(4, "nnunetv2")[:3]  # the level with weight 0 has no output
    assert DeepSupervisionLoss(base, weights)(outputs, label).item() == pytest.approx((4 + 2 * 2 + 4) / 7)
    with pytest.raises(ValueError, match="3 deep-supervision outputs but 2 weights"):
        DeepSupervisionLoss(base, [0.5, 0.5])(outputs, label)


def test_deep_supervision_passes_a_tensor_through() -> None:
    logits, label = torch.zeros(1, 2, 2, 2), torch.tensor([[0, 1], [1, 0]]).view(1, 1, 2, 2)
    assert DeepSupervisionLoss(DiceCELoss())(logits, label).item() == pytest.approx(DiceCELoss()(logits, label).item())


def test_downsample_label_anisotropic_3d() -> None:
    label = torch.randint(0, 3, (2, 1, 4, 8, 8), dtype=torch.uint8)
    small = downsample_label(label, (4, 4, 4))
    assert torch.equal(small, label[:, :, :, ::2, ::2])
