"""Topology rule against the reference's 20 MSD configurations (NVIDIA nnU-Net v21.10 ``get_unet_params``)."""

from __future__ import annotations

import pytest

from nnunet_ray.planning.presets import MSD_PRESETS, preset_geometry
from nnunet_ray.planning.topology import get_filters, get_topology, total_stride


def levels(text: str) -> list[list[int]]:
    """'133 333x2' -> [[1,3,3],[3,3,3],[3,3,3]]: the notes' compact per-level notation."""
    out: list[list[int]] = []
    for token in text.split():
        digits, _, repeat = token.partition("x")
        out += [[int(d) for d in digits] for _ in range(int(repeat or 1))]
    return out


# (task, dim): (kernels, strides, bottleneck feature map): ``utils/utils.py::get_unet_params`` (v21.10) applied to
# ``data_preprocessing/configs.py`` patch sizes and spacings.
TABLE = {
    (1, 3): ("333x6", "111 222x5", (4, 4, 4)),
    (2, 3): ("333x6", "111 222x4 122", (5, 6, 5)),
    (3, 3): ("333x6", "111 222x5", (4, 4, 4)),
    (4, 3): ("333x4", "111 222x3", (5, 7, 5)),
    (5, 3): ("133 133 333x5", "111 122 122 222 222 122 122", (5, 5, 4)),
    (6, 3): ("333x6", "111 222x4 122", (5, 6, 5)),
    (7, 3): ("133 333x5", "111 122 222x3 122", (5, 7, 7)),
    (8, 3): ("333x6", "111 222x4 122", (4, 6, 6)),
    (9, 3): ("133 333x5", "111 122 222x4", (4, 6, 5)),
    (10, 3): ("133 333x5", "111 122 222x3 122", (7, 6, 5)),
    (1, 2): ("33x6", "11 22x5", (6, 5)),
    (2, 2): ("33x7", "11 22x6", (5, 4)),
    (3, 2): ("33x7", "11 22x6", (8, 8)),
    (4, 2): ("33x4", "11 22x3", (7, 5)),
    (5, 2): ("33x7", "11 22x6", (5, 5)),
    (6, 2): ("33x7", "11 22x6", (8, 8)),
    (7, 2): ("33x7", "11 22x6", (8, 8)),
    (8, 2): ("33x7", "11 22x6", (8, 8)),
    (9, 2): ("33x7", "11 22x6", (8, 8)),
    (10, 2): ("33x7", "11 22x6", (8, 8)),
}


@pytest.mark.parametrize(("task", "dim"), sorted(TABLE))
def test_msd_topologies_match_reference(task: int, dim: int) -> None:
    kernels_text, strides_text, bottleneck = TABLE[(task, dim)]
    patch, _, spacing = preset_geometry(MSD_PRESETS[task], dim)
    kernels, strides = get_topology(patch, spacing, min_fmap=4, max_depth=6)
    assert kernels == levels(kernels_text)
    assert strides == levels(strides_text)
    assert tuple(p // s for p, s in zip(patch, total_stride(strides))) == bottleneck


def test_filters_match_reference() -> None:
    assert get_filters(6, 3) == [32, 64, 128, 256, 320, 320]
    assert get_filters(7, 3) == [32, 64, 128, 256, 320, 320, 320]
    assert get_filters(7, 2) == [32, 64, 128, 256, 512, 512, 512]
    assert get_filters(4, 2) == [32, 64, 128, 256]


def test_max_depth_caps_downsamplings() -> None:
    # Task05 3D: v21.02/05 capped at 5 strides -> 6 levels, bottleneck 5x10x8 (notes §4.5).
    kernels, strides = get_topology([20, 320, 256], [3.6, 0.62, 0.62], max_depth=5)
    assert strides == levels("111 122 122 222 222 122")
    assert kernels == levels("133 133 333x4")
    assert total_stride(strides) == [4, 32, 32]


def test_min_fmap_two_gives_deeper_net() -> None:
    # BraTS21 notebook setting: 128^3 at 1 mm with min_fmap 2 -> 6 strides, 2x2x2 bottleneck.
    _, strides = get_topology([128, 128, 128], [1.0, 1.0, 1.0], min_fmap=2)
    assert len(strides) == 7 and total_stride(strides) == [64, 64, 64]


def test_tiny_patch_has_only_input_and_bottleneck() -> None:
    kernels, strides = get_topology([6, 6, 6], [1.0, 1.0, 1.0])
    assert strides == [[1, 1, 1]] and kernels == [[3, 3, 3]]


@pytest.mark.parametrize(
    ("patch", "spacing"),
    [([64, 64], [1.0, 1.0, 1.0]), ([64], [1.0]), ([64, 0, 64], [1.0, 1.0, 1.0]), ([64, 64], [1.0, -1.0])],
)
def test_bad_arguments_raise(patch: list[int], spacing: list[float]) -> None:
    with pytest.raises(ValueError):
        get_topology(patch, spacing)


def test_filters_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="dim"):
        get_filters(4, 1)
    with pytest.raises(ValueError, match="n_levels"):
        get_filters(0, 3)
