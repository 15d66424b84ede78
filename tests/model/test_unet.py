"""U-Net built from plans: reference parameter counts, shapes on MSD presets, deep supervision, memory formats."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from nnunet_ray.model.blocks import ResidBlock, make_norm
from nnunet_ray.model.losses import DeepSupervisionLoss, DiceCELoss
from nnunet_ray.model.unet import build_unet
from nnunet_ray.planning.patch import synthetic_plans
from nnunet_ray.planning.schema import Plans

torch.set_num_threads(1)

K3, K2 = [3, 3, 3], [3, 3]
# Reference topologies (NVIDIA nnU-Net v21.10 ``utils/utils.py::get_unet_params`` on the MSD presets):
# (dim, in_channels, n_classes, kernels, strides, filters).
PRESETS = {
    "01_3d": (3, 4, 4, [K3] * 6, [[1, 1, 1]] + [[2, 2, 2]] * 5, [32, 64, 128, 256, 320, 320]),
    "04_3d": (3, 1, 3, [K3] * 4, [[1, 1, 1]] + [[2, 2, 2]] * 3, [32, 64, 128, 256]),
    "05_3d": (3, 2, 3, [[1, 3, 3]] * 2 + [K3] * 5,
              [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
              [32, 64, 128, 256, 320, 320, 320]),
    "10_3d": (3, 1, 2, [[1, 3, 3]] + [K3] * 5,
              [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
              [32, 64, 128, 256, 320, 320]),
    "01_2d": (2, 4, 4, [K2] * 6, [[1, 1]] + [[2, 2]] * 5, [32, 64, 128, 256, 512, 512]),
    "04_2d": (2, 1, 3, [K2] * 4, [[1, 1]] + [[2, 2]] * 3, [32, 64, 128, 256]),
}


def network_plans(dim: int, cin: int, ncls: int, kernels: list, strides: list, filters: list) -> Plans:
    """Plans whose network fields are given; the rest (unused by the model) are placeholders."""
    return dataclasses.replace(synthetic_plans(dim, (64,) * dim, in_channels=cin, n_classes=ncls), kernels=kernels,
                               strides=strides, filters=filters)


def make_plans(name: str, *, width_div: int = 1) -> Plans:
    """Hand-written plans for a preset; ``width_div`` shrinks the filters to keep CPU tests fast."""
    dim, cin, ncls, kernels, strides, filters = PRESETS[name]
    return network_plans(dim, cin, ncls, kernels, strides, [max(f // width_div, 2) for f in filters])


def small_shape(plans: Plans) -> list[int]:
    """Twice the stride product per axis: the smallest input whose bottleneck has > 1 voxel (instance norm)."""
    return [2 * math.prod(s[a] for s in plans.strides) for a in range(plans.dim)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, expected", [("01_3d", 31.2e6), ("01_2d", 20.6e6), ("05_3d", 44.8e6)])
def test_parameter_count_matches_reference(name: str, expected: float) -> None:
    # Reference counts exclude deep-supervision heads (the main 1x1 head is included; it is ~100 params).
    model = build_unet(make_plans(name))
    assert abs(n_params(model) - expected) / expected < 0.01


def test_deep_supervision_adds_only_heads() -> None:
    plans = make_plans("01_3d")
    extra = n_params(build_unet(plans, deep_supervision=True)) - n_params(build_unet(plans))
    assert extra == (64 * 4 + 4) + (128 * 4 + 4)  # 1x1 heads on 64 and 128 channels, 4 classes


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_output_shape_equals_input_shape(name: str) -> None:
    plans = make_plans(name, width_div=16)
    model = build_unet(plans)
    spatial = small_shape(plans)
    with torch.no_grad():
        out = model(torch.randn(1, plans.in_channels, *spatial))
    assert out.shape == (1, plans.n_classes, *spatial)


@pytest.mark.parametrize("norm", ["instance", "batch", "group"])
@pytest.mark.parametrize("residual", [False, True])
def test_norm_and_residual_variants_run(norm: str, residual: bool) -> None:
    plans = make_plans("10_3d", width_div=16)
    model = build_unet(plans, norm=norm, residual=residual)
    spatial = small_shape(plans)
    out = model(torch.randn(2, 1, *spatial))
    out.sum().backward()
    assert out.shape == (2, 2, *spatial)
    assert all(p.grad is not None for p in model.parameters())


def test_residual_blocks_in_encoder_only() -> None:
    model = build_unet(make_plans("04_3d", width_div=16), residual=True)
    assert all(isinstance(b, ResidBlock) for b in model.encoder)
    assert not any(isinstance(m, ResidBlock) for m in model.decoder.modules())


def test_group_norm_uses_32_groups() -> None:
    assert make_norm("group", 64, 3).num_groups == 32
    assert make_norm("group", 48, 3).num_groups == 16  # falls back to a divisor


def test_deep_supervision_outputs_in_train_mode_only() -> None:
    plans = make_plans("05_3d", width_div=16)
    model = build_unet(plans, deep_supervision=True)
    z, y, x = small_shape(plans)  # strides level 1, 2 are (1,2,2): z is kept
    outs = model(torch.randn(1, 2, z, y, x))
    assert [tuple(o.shape) for o in outs] == [(1, 3, z, y, x), (1, 3, z, y // 2, x // 2), (1, 3, z, y // 4, x // 4)]
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, z, y, x)).shape == (1, 3, z, y, x)


def test_nnunetv2_deep_supervision_heads_every_level_but_the_lowest() -> None:
    plans = make_plans("01_3d", width_div=16)  # 6 levels: decoder levels 0..4, level 4 weighted 0 by nnU-Net v2
    model = build_unet(plans, deep_supervision=True, deep_supervision_scheme="nnunetv2")
    assert model.aux_levels == [1, 2, 3]
    assert model.deep_supervision_weights == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    side = small_shape(plans)[0]
    outs = model(torch.randn(1, 4, side, side, side))
    assert [o.shape[2] for o in outs] == [side, side // 2, side // 4, side // 8]
    dle = build_unet(plans, deep_supervision=True)
    assert dle.aux_levels == [1, 2] and dle.deep_supervision_weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    # Every head gets a gradient from the loss (DDP fails on an unused one: nnU-Net v2 weights its lowest 1e-6).
    label = torch.randint(0, 4, (1, 1, side, side, side), dtype=torch.uint8)
    DeepSupervisionLoss(DiceCELoss(), model.deep_supervision_weights)(outs, label).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux_heads.parameters())


def test_deep_supervision_on_shallow_net_has_fewer_heads() -> None:
    plans = network_plans(2, 1, 2, [K2] * 3, [[1, 1], [2, 2], [2, 2]], [4, 8, 16])
    outs = build_unet(plans, deep_supervision=True)(torch.randn(1, 1, 16, 16))
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 16), (8, 8)]


def test_init_kaiming_and_zero_head_bias() -> None:
    model = build_unet(make_plans("04_2d"), negative_slope=0.01)
    assert torch.count_nonzero(model.head.bias) == 0
    w = model.encoder[3].conv1.conv.weight  # 128 -> 256, 3x3: fan_in = 1152
    expected_std = math.sqrt(2.0 / (1 + 0.01**2) / (128 * 9))
    assert abs(float(w.detach().std()) - expected_std) / expected_std < 0.05
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d) and m is not model.head)


@pytest.mark.parametrize("name, fmt", [("04_3d", torch.channels_last_3d), ("04_2d", torch.channels_last)])
def test_channels_last_matches_contiguous(name: str, fmt: torch.memory_format) -> None:
    plans = make_plans(name, width_div=16)
    model = build_unet(plans).eval()
    x = torch.randn(1, plans.in_channels, *small_shape(plans))
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=fmt)(x.to(memory_format=fmt))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_torch_compile_traces_forward_and_backward() -> None:
    # aot_eager runs Dynamo and AOTAutograd (the graph capture inductor would get) without compiling kernels.
    plans = make_plans("04_2d", width_div=16)
    model = build_unet(plans, deep_supervision=True)
    x = torch.randn(2, 1, *small_shape(plans))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    outs = compiled(x)
    for ref, out in zip(model(x), outs):
        torch.testing.assert_close(out, ref)
    sum(o.sum() for o in outs).backward()
    assert model.head.weight.grad is not None


def test_input_not_divisible_by_strides_is_rejected() -> None:
    model = build_unet(make_plans("04_2d", width_div=16))
    with pytest.raises(ValueError, match="not divisible"):
        model(torch.randn(1, 1, 20, 16))


@pytest.mark.parametrize("change, match", [
    ({"dim": 4}, "dim must be 2 or 3"),
    ({"filters": [4, 8]}, "same length"),
    ({"kernels": [[3, 3, 3]] * 4}, "entries"),
    ({"strides": [[2, 2]] * 4}, "strides\\[0\\]"),
])
def test_bad_plans_are_rejected(change: dict, match: str) -> None:
    plans = dataclasses.replace(make_plans("04_2d", width_div=16), **change)
    with pytest.raises(ValueError, match=match):
        build_unet(plans)


def test_unknown_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="norm"):
        build_unet(make_plans("04_2d", width_div=16), norm="layer")
