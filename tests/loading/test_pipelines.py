"""The DALI training loader on the CPU (real DALI): crops, oversampling, alignment, sharding, seeding, 2D."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_ray.data.types import CaseError
from nnunet_ray.loading.augment import Augmentations
from nnunet_ray.loading.pipelines import rank_seed, train_loader
from tests.conftest import make_test_plans

PLANS_3D = make_test_plans(dim=3, in_channels=2, n_classes=2)
PLANS_2D = make_test_plans(dim=2, in_channels=2, n_classes=2)


def _batches(loader, n):
    return [loader.next_batch() for _ in range(n)]


def _small_object_case(case_writer):
    """48^3 volume, a 2^3 object in the middle: a uniform 16^3 crop holds it about 14 % of the time."""
    image = np.random.default_rng(0).standard_normal((2, 48, 48, 48)).astype(np.float32)
    label = np.zeros((1, 48, 48, 48), np.uint8)
    label[0, 23:25, 23:25, 23:25] = 1
    return case_writer("obj", image, label)


@pytest.mark.parametrize("oversampling, low, high", [(0.33, 0.33, 1.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.3)])
def test_foreground_fraction_over_256_crops(case_writer, oversampling, low, high):
    folder = _small_object_case(case_writer)
    loader = train_loader(folder, ["obj"], PLANS_3D, batch_size=16, seed=3, oversampling=oversampling,
                          num_threads=2)  # all augmentations on
    labels = torch.cat([b["label"] for b in _batches(loader, 16)])
    fraction = (labels.flatten(1).amax(1) > 0).float().mean().item()
    assert low <= fraction <= high


def test_batch_shapes_dtypes_and_length(indexed_cases):
    folder, ids = indexed_cases(5, (20, 24, 28))
    loader = train_loader(folder, ids, PLANS_3D, batch_size=2, seed=0, num_threads=1)
    assert len(loader) == 3 and len(list(loader)) == 3
    batch = loader.next_batch()
    assert batch["image"].shape == (2, 2, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 1, 16, 16, 16) and batch["label"].dtype == torch.uint8


def _threshold_case(case_writer, shape):
    """A smooth off-centre blob: label == (image > 0) voxel for voxel; channel 1 is a copy."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    centre = np.asarray([s * 0.35 for s in shape], np.float32).reshape(3, 1, 1, 1)
    blob = 5.0 - np.sqrt(((grid - centre) ** 2).sum(0))
    return case_writer("blob", np.stack([blob, blob]), (blob > 0)[None].astype(np.uint8))


def test_flips_move_image_and_label_together(case_writer):
    folder = _threshold_case(case_writer, (16, 16, 16))  # volume == patch: the crop is the whole volume
    original = np.load(folder / "blob_x.npy")
    aug = Augmentations(zoom=0.0, flip=1.0).spatial_only()
    batch = train_loader(folder, ["blob"], PLANS_3D, batch_size=2, seed=0, augment=aug).next_batch()
    expected = np.flip(original, axis=(1, 2, 3))
    assert np.array_equal(batch["image"][0].numpy(), expected)
    assert np.array_equal(batch["label"][0, 0].numpy(), (expected[0] > 0).astype(np.uint8))


def test_zoom_and_flips_keep_label_aligned(case_writer):
    folder = _threshold_case(case_writer, (24, 24, 24))
    blob_voxels = int(np.load(folder / "blob_y.npy").sum())
    aug = Augmentations(zoom=1.0, flip=0.5).spatial_only()
    loader = train_loader(folder, ["blob"], PLANS_3D, batch_size=8, seed=1, augment=aug, oversampling=1.0)
    batch = loader.next_batch()
    assert batch["label"].dtype == torch.uint8
    image, label = batch["image"][:, 0], batch["label"][:, 0]
    # cubic (image) and nearest (label) resampling may disagree only right at the surface, where the
    # distance-like image is near 0; any misalignment would put disagreements deep inside or outside
    wrong = (image > 0) != (label > 0)
    assert wrong.float().mean() < 0.06 and image[wrong].abs().max() < 1.0
    shifted = (image.flip(1) > 0) != (label > 0)
    assert image.flip(1)[shifted].abs().max() > 2.0
    # zooming in enlarges the object beyond its size in the volume
    assert (label.flatten(1).sum(1) > blob_voxels).all()


def test_two_ranks_see_disjoint_cases_each_epoch(indexed_cases):
    folder, ids = indexed_cases(5, (16, 16, 16))  # 5 cases: shards of 3 and 2, padded to 2 batches of 2
    loaders = [train_loader(folder, ids, PLANS_3D, batch_size=2, seed=5, rank=r, world_size=2,
                            augment=False, num_threads=1) for r in range(2)]
    assert [len(loader) for loader in loaders] == [2, 2]
    for _ in range(3):  # three reshuffled epochs
        seen = [{int(v) for b in loader for v in b["image"][:, 0, 0, 0, 0]} for loader in loaders]
        assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {0, 1, 2, 3, 4}


def test_same_seed_same_batches_other_rank_or_seed_differs(indexed_cases):
    folder, ids = indexed_cases(4, (20, 20, 20))

    def first(seed, rank):
        loader = train_loader(folder, ids, PLANS_3D, batch_size=2, seed=seed, rank=rank, world_size=2,
                              num_threads=2, augment=Augmentations(zoom=0.5, noise=0.5, blur=0.5))
        return torch.cat([b["image"] for b in _batches(loader, 3)])

    reference = first(7, 0)
    assert torch.equal(reference, first(7, 0))
    assert not torch.equal(reference, first(7, 1))
    assert not torch.equal(reference, first(8, 0))
    assert rank_seed(7, 0) != rank_seed(7, 1) != rank_seed(8, 0)


def test_2d_batches_are_slices_from_nvol_volumes(indexed_cases):
    folder, ids = indexed_cases(4, (12, 24, 20))
    loader = train_loader(folder, ids, PLANS_2D, batch_size=8, nvol=2, seed=0, oversampling=1.0,
                          augment=Augmentations().spatial_only(), num_threads=1)
    assert len(loader) == 2
    batch = loader.next_batch()
    assert batch["image"].shape == (8, 2, 16, 16) and batch["label"].shape == (8, 1, 16, 16)
    cases = batch["image"][:, 0].flatten(1).mean(1).round()
    assert cases[:4].unique().numel() == 1 and cases[4:].unique().numel() == 1 and cases[0] != cases[4]
    assert (batch["label"].flatten(1).amax(1) > 0).all()  # oversampling 1: every slice holds foreground


def test_2d_slices_without_oversampling_are_uniform(indexed_cases):
    folder, ids = indexed_cases(1, (40, 16, 16))
    loader = train_loader(folder, ids, PLANS_2D, batch_size=32, seed=0, oversampling=0.0, augment=False)
    labels = loader.next_batch()["label"]
    # a 2-slice object in 40 slices: about 5 % of uniformly drawn slices hold it, never all of them
    assert (labels.flatten(1).amax(1) > 0).float().mean() < 0.5


def test_volume_smaller_than_patch_is_zero_padded(case_writer):
    image = np.ones((2, 12, 20, 20), np.float32)
    folder = case_writer("small", image, np.ones((1, 12, 20, 20), np.uint8))
    batch = train_loader(folder, ["small"], PLANS_3D, batch_size=2, seed=0, augment=False).next_batch()
    assert batch["image"].shape == (2, 2, 16, 16, 16)
    assert batch["image"][:, :, :12].eq(1).all() and batch["image"][:, :, 12:].eq(0).all()


def test_case_without_foreground_falls_back_to_uniform_crops(case_writer):
    folder = case_writer("empty", np.zeros((2, 24, 24, 24), np.float32), np.zeros((1, 24, 24, 24), np.uint8))
    loader = train_loader(folder, ["empty"], PLANS_3D, batch_size=4, seed=0, oversampling=1.0)
    assert loader.next_batch()["label"].sum() == 0


def test_missing_case_file_names_the_case(indexed_cases):
    folder, ids = indexed_cases(2, (16, 16, 16))
    (folder / "case_1_y.npy").unlink()
    with pytest.raises(CaseError, match="case_1: missing case_1_y.npy"):
        train_loader(folder, ids, PLANS_3D, batch_size=1, seed=0)


@pytest.mark.parametrize("plans, kwargs, message", [
    (PLANS_2D, {"batch_size": 6, "nvol": 4}, "multiple of --nvol"),
    (PLANS_3D, {"batch_size": 1, "world_size": 3}, "cannot be shared by 3 workers"),
    (PLANS_3D, {"batch_size": 1, "oversampling": 1.5}, "--oversampling"),
    (make_test_plans(dim=3, in_channels=2, patch_size=[16, 16]), {"batch_size": 1}, "patch_size"),
    (PLANS_3D, {"batch_size": 1, "seed": -1}, "--seed"),
])
def test_bad_arguments(indexed_cases, plans, kwargs, message):
    folder, ids = indexed_cases(2, (16, 16, 16))
    with pytest.raises(ValueError, match=message):
        train_loader(folder, ids, plans, **{"seed": 0, **kwargs})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batches_live_on_the_device(indexed_cases):
    folder, ids = indexed_cases(2, (20, 20, 20))
    batch = train_loader(folder, ids, PLANS_3D, batch_size=2, seed=0, device_id=0).next_batch()
    assert batch["image"].is_cuda and batch["image"].shape == (2, 2, 16, 16, 16)
    assert batch["label"].dtype == torch.uint8


def test_a_process_that_ends_without_atexit_leaves_no_autograph_files(indexed_cases, tmp_path):
    """DALI's autograph writes the converted augmentation code to <tmp>/__autograph_generated_file*.py and deletes it
    only at exit; Ray workers end without exit hooks (here: os._exit after one batch, as a killed trial's process)."""
    folder, ids = indexed_cases(2, (8, 8, 8))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from nnunet_ray.loading.pipelines import train_loader
        from tests.loading.test_pipelines import PLANS_3D
        loader = train_loader(Path({str(folder)!r}), {ids!r}, PLANS_3D, batch_size=2, seed=0, num_threads=1)
        loader.next_batch()
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "TMPDIR": str(scratch)},
                   cwd=Path(__file__).resolve().parents[2])
    assert not list(scratch.glob("__autograph_generated_file*"))
