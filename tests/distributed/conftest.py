"""One local Ray cluster (2 CPUs) for every test in tests/distributed, started before the first of them."""

from __future__ import annotations

import os

import pytest

from nnunet_ray.distributed.cluster import init_ray


@pytest.fixture(scope="session", autouse=True)
def ray_cluster():
    # Ray Train's controller polls workers every 2 s by default; polling faster shortens each fit()'s teardown
    # by seconds. It is read by processes the local cluster starts, so it must be set before ray.init.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    init_ray(num_cpus=2)
    yield
