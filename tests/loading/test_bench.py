"""loader_throughput on a tiny patch (the real measurement is the benchmark script's job)."""

import numpy as np
import pytest

from nnunet_ray.loading.bench import loader_throughput, write_synthetic_cases


@pytest.mark.parametrize("dim, patch, batch_size, nvol", [(3, (16, 16, 16), 2, 1), (2, (16, 16), 4, 2)])
def test_loader_throughput_reports_patches_per_second(dim, patch, batch_size, nvol):
    result = loader_throughput(dim=dim, channels=2, patch_size=patch, batch_size=batch_size, nvol=nvol,
                               batches=2, warmup=1, num_threads=1, worst_case=True)
    assert result["patches_per_s"] > 0 and result["batches"] == 2 and result["device"] == "cpu"
    assert result["patches_per_s"] == pytest.approx(result["batches_per_s"] * batch_size)


def test_synthetic_cases_follow_the_preprocessed_format(tmp_path):
    ids = write_synthetic_cases(tmp_path, n_cases=2, channels=3, shape=(10, 12, 14))
    assert ids == ["bench_000", "bench_001"]
    image, label = np.load(tmp_path / "bench_000_x.npy"), np.load(tmp_path / "bench_000_y.npy")
    assert image.shape == (3, 10, 12, 14) and image.dtype == np.float32
    assert label.shape == (1, 10, 12, 14) and label.dtype == np.uint8 and label.sum() > 0
