"""Per-case Dice with the reference's absent-class rule, and its accumulator across cases and ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from nnunet_ray.evaluation.metrics import DiceAccumulator, case_dice, dice_from_logits


def vol(values: list[int]) -> torch.Tensor:
    """A (1, 2, len/2) volume from a flat list of class ids."""
    return torch.tensor(values).view(1, 2, -1)


@pytest.mark.parametrize("pred, label, expected", [
    ([0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 2, 0], [1.0, 1.0]),  # perfect
    ([1, 0, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0], [0.0, 1.0]),  # disjoint class 1; class 2 absent in both
    # class 1: label on 4 voxels, pred on 2 of them + 1 more: 2TP / (2TP + FP + FN) = 4 / (4 + 1 + 2)
    ([1, 1, 0, 0, 1, 0], [1, 1, 1, 1, 0, 0], [4 / 7, 1.0]),
    ([0, 0, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1.0, 0.0]),  # class 2 only predicted: 0
    ([0, 0, 0, 0, 0, 0], [0, 2, 0, 0, 0, 0], [1.0, 0.0]),  # class 2 only in label: 0
])
def test_case_dice_table(pred: list[int], label: list[int], expected: list[float]) -> None:
    dice = case_dice(vol(pred), vol(label).to(torch.uint8), 3)
    assert dice.dtype == torch.float32
    torch.testing.assert_close(dice, torch.tensor(expected))


def test_case_dice_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        case_dice(torch.zeros(2, 2, 2, dtype=torch.long), torch.zeros(2, 2, 1, dtype=torch.long), 2)


@pytest.mark.parametrize("bad", [3, -1])
def test_case_dice_rejects_out_of_range_classes(bad: int) -> None:
    pred = torch.tensor([0, 1, bad, 0]).view(1, 2, 2)
    with pytest.raises(ValueError, match="pred has values outside"):
        case_dice(pred, torch.zeros(1, 2, 2, dtype=torch.long), 3)


def test_dice_from_logits_per_case() -> None:
    label = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]]).view(2, 1, 2, 2)
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]]), 2).float()  # (2, 4, K)
    logits = logits.movedim(-1, 1).reshape(2, 2, 2, 2)  # (B, K, Y, X)
    torch.testing.assert_close(dice_from_logits(logits, label), torch.tensor([[1.0], [2 / 3]]))


def test_accumulator_means_per_case_then_over_classes() -> None:
    acc = DiceAccumulator(3)
    acc.update(vol([0, 1, 1, 2, 2, 0]), vol([0, 1, 1, 2, 2, 0]))  # [1, 1]
    acc.update(vol([1, 1, 0, 0, 1, 0]), vol([1, 1, 1, 1, 0, 0]))  # [4/7, 1]
    acc.update(vol([0, 0, 2, 0, 0, 0]), vol([0, 0, 0, 0, 0, 0]))  # [1, 0]
    per_class, mean = acc.compute()
    expected = torch.tensor([(2 + 4 / 7) / 3, 2 / 3])
    torch.testing.assert_close(per_class, expected)
    assert mean == pytest.approx(float(expected.mean()))
    acc.compute()  # repeatable: compute does not consume the state
    assert float(acc.count) == 3


def test_accumulator_all_reduce_adds_other_ranks() -> None:
    acc = DiceAccumulator(2)
    acc.update(vol([0, 1, 1, 0]), vol([0, 1, 1, 0]))  # 1.0 here; another rank holds 2 cases summing to 0.5

    def fake_all_reduce(buf: torch.Tensor) -> None:
        buf += torch.tensor([0.5, 2.0], dtype=buf.dtype)

    per_class, mean = acc.compute(fake_all_reduce)
    assert mean == pytest.approx(1.5 / 3)
    assert per_class.shape == (1,)


def test_accumulator_with_torch_distributed_gloo(tmp_path) -> None:
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        acc = DiceAccumulator(2)
        acc.update(vol([0, 1, 1, 0]), vol([0, 1, 0, 0]))  # 2 / 3
        assert acc.compute(dist.all_reduce)[1] == pytest.approx(2 / 3)
    finally:
        dist.destroy_process_group()


def test_accumulator_reset_and_empty_compute() -> None:
    acc = DiceAccumulator(2)
    acc.update(vol([0, 1, 1, 0]), vol([0, 1, 1, 0]))
    acc.reset()
    with pytest.raises(RuntimeError, match="no cases"):
        acc.compute()
