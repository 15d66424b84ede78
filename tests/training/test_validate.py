"""Validation on whole volumes: Dice and loss of a known predictor, rank reduction, overlay slice."""

import pytest
import torch

from nnunet_ray.model.losses import DiceCELoss
from nnunet_ray.training.validate import validate
from tests.conftest import make_test_plans

CPU = torch.device("cpu")


class OneHotModel(torch.nn.Module):
    """Returns its input as logits: fed a scaled one-hot of the label, it predicts the label exactly."""

    def forward(self, x):
        return x


def _case(label, n_classes=3, case_id="c0"):
    onehot = torch.nn.functional.one_hot(label.long(), n_classes).permute(3, 0, 1, 2).float() * 10
    return {"case_id": case_id, "image": onehot[None], "label": label[None, None].to(torch.uint8)}


def _label(shape=(6, 9, 10)):
    label = torch.zeros(shape, dtype=torch.uint8)
    label[1:4, 2:6, 3:8] = 1
    label[2:3, 6:8, 1:3] = 2
    return label


@pytest.mark.parametrize("patch, tta", [([4, 4, 4], False), ([4, 4, 4], True), ([4, 8], False), ([4, 8], True)])
def test_perfect_predictor_scores_one(patch, tta):
    plans = make_test_plans(dim=len(patch), patch_size=patch)
    out = validate(OneHotModel(), [_case(_label()), _case(_label().flip(0), case_id="c1")], plans=plans,
                   loss_fn=DiceCELoss(), device=CPU, tta=tta, want_overlay=True)
    assert out["dice"] == [1.0, 1.0] and out["dice_mean"] == 1.0
    assert out["val_cases"] == 2 and out["val_loss"] < 0.01
    image, label, pred = out["overlay"]
    assert image.shape == label.shape == pred.shape == (9, 10)
    assert torch.equal(label.long(), _label()[2].long()) and torch.equal(pred, label.long())  # z=2: most foreground


def test_missing_class_in_prediction_scores_zero_and_ranks_are_summed():
    plans = make_test_plans(patch_size=[4, 4, 4])
    case = _case(_label())
    case["image"][0, 2] = 0  # the model never predicts class 2 -> its Dice is 0
    local = validate(OneHotModel(), [case], plans=plans, loss_fn=DiceCELoss(), device=CPU)
    assert local["dice"][0] == 1.0 and local["dice"][1] == 0.0 and local["dice_mean"] == 0.5
    # Two identical ranks: sums double, means stay, the case count is global.
    doubled = validate(OneHotModel(), [case], plans=plans, loss_fn=DiceCELoss(), device=CPU,
                       all_reduce=lambda t: t.mul_(2))
    assert doubled["dice"] == local["dice"] and doubled["val_cases"] == 2
    assert doubled["val_loss"] == pytest.approx(local["val_loss"])


def test_model_returns_to_train_mode_and_no_cases_is_an_error():
    model = OneHotModel().train()
    with pytest.raises(RuntimeError, match="no cases"):
        validate(model, [], plans=make_test_plans(patch_size=[4, 4, 4]), loss_fn=DiceCELoss(), device=CPU)
    assert model.training
