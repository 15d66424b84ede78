"""Plans for another patch size: the topology re-derived with the planner's rule, unusable patches refused."""

from __future__ import annotations

import pytest

from nnunet_ray.planning.patch import PatchSizeError, plans_for_patch
from nnunet_ray.planning.plans import plans_hash
from nnunet_ray.planning.presets import preset_plans
from nnunet_ray.planning.topology import get_filters, get_topology


def test_empty_patch_keeps_the_plans():
    plans = preset_plans(4, 3)
    assert plans_for_patch(plans, ()) is plans


def test_preset_patch_reproduces_the_planned_topology():
    plans = preset_plans(4, 3)  # Task04 Hippocampus 3D: patch 40x56x40 at 1 mm
    again = plans_for_patch(plans, plans["patch_size"])
    assert (again["kernels"], again["strides"], again["filters"]) == (plans["kernels"], plans["strides"],
                                                                      plans["filters"])


def test_new_patch_gets_the_rule_topology_and_a_new_hash():
    plans = preset_plans(4, 3)
    new = plans_for_patch(plans, [32, 48, 32])
    kernels, strides = get_topology([32, 48, 32], plans["spacing"], min_fmap=4, max_depth=6)
    assert new["patch_size"] == [32, 48, 32] and (new["kernels"], new["strides"]) == (kernels, strides)
    assert new["filters"] == get_filters(len(strides), 3) and new["hash"] != plans_hash(plans)
    assert plans["patch_size"] == [40, 56, 40]  # the input is not modified


def test_stored_min_fmap_and_max_depth_are_used():
    plans = {**preset_plans(4, 3), "min_fmap": 2, "max_depth": 2}
    new = plans_for_patch(plans, [32, 32, 32])
    assert new["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]


def test_filters_keep_the_plans_base_width():
    plans = {**preset_plans(4, 3), "filters": [4, 8, 16, 32]}
    assert plans_for_patch(plans, [16, 16, 16])["filters"] == [4, 8, 16]


@pytest.mark.parametrize("patch, problem", [
    ([16, 16], "not 3 positive edges"),
    ([16, 0, 16], "not 3 positive edges"),
    ([4, 4, 4], "too small"),
    ([16, 16, 18], "18 \\(axis 2\\) is not a multiple of 4"),
])
def test_unusable_patches_are_refused(patch, problem):
    with pytest.raises(PatchSizeError, match=problem):
        plans_for_patch(preset_plans(4, 3), patch)
