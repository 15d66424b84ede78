"""Validation on whole volumes: Dice and loss of a known predictor, rank reduction, overlay slice."""

import pytest
import torch

from nnunet_ray.config import SlidingWindow
from nnunet_ray.model.losses import DeepSupervisionLoss, DiceCELoss
from nnunet_ray.training.validate import scores_device, validate, volume_loss
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
                   loss_fn=DiceCELoss(), device=CPU, window=SlidingWindow(tta=tta), want_overlay=True)
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


class SlabSpy(DiceCELoss):
    """DiceCELoss that records the spatial size of every part it is given."""

    def __init__(self):
        super().__init__()
        self.voxels = []

    def statistics(self, logits, label):
        self.voxels.append(logits[0, 0].numel())
        return super().statistics(logits, label)


@pytest.mark.parametrize("probabilities", [False, True])
def test_volume_loss_slab_by_slab_equals_the_whole_volume_loss(probabilities):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 3, 9, 10, 11, generator=g)
    if probabilities:
        scores = scores.softmax(1)
    label = torch.randint(0, 3, (1, 1, 9, 10, 11), generator=g, dtype=torch.uint8)
    whole = DiceCELoss()(scores.clamp_min(1e-8).log() if probabilities else scores, label)
    spy = SlabSpy()
    sliced = volume_loss(spy, scores, label, probabilities=probabilities, device=CPU, slab_voxels=250)
    assert float(sliced) == pytest.approx(float(whole), rel=1e-6)
    # 250 voxels -> 2 slices of 10 x 11 per slab: 5 slabs, none of them the whole volume.
    assert spy.voxels == [220, 220, 220, 220, 110]
    assert float(volume_loss(DeepSupervisionLoss(DiceCELoss()), scores, label, probabilities=probabilities,
                             device=CPU)) == pytest.approx(float(whole), rel=1e-6)


def test_focal_statistics_add_up_too():
    g = torch.Generator().manual_seed(1)
    logits, label = torch.randn(1, 2, 6, 5, 4, generator=g), torch.randint(0, 2, (1, 1, 6, 5, 4), generator=g)
    focal = DiceCELoss(focal=True)
    assert float(volume_loss(focal, logits, label, probabilities=False, device=CPU, slab_voxels=20)) == \
        pytest.approx(float(focal(logits, label)), rel=1e-6)


@pytest.mark.parametrize("scores_on, device, shape, expected", [
    ("auto", "cuda", (64, 64, 64), "cuda"),  # 3 x 1 MiB: stays on the GPU
    ("auto", "cuda", (512, 512, 512), "cpu"),  # 3 x 512 MiB > 1 GiB: blended on the CPU
    ("cpu", "cuda", (8, 8, 8), "cpu"),  # always, when asked
    ("device", "cuda", (512, 512, 512), "cuda"),
    ("auto", "cpu", (512, 512, 512), "cpu"),
])
def test_scores_device(scores_on, device, shape, expected):
    assert scores_device(scores_on, torch.device(device), 3, shape).type == expected


def test_validation_with_scores_on_cpu_matches():
    plans = make_test_plans(patch_size=[4, 4, 4])
    cases = [_case(_label()), _case(_label().flip(1), case_id="c1")]
    kwargs = dict(plans=plans, loss_fn=DiceCELoss(), device=CPU)
    assert validate(OneHotModel(), cases, scores_on="cpu", **kwargs) == validate(OneHotModel(), cases, **kwargs)
