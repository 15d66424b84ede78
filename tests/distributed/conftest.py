"""One local Ray cluster (2 CPUs) for every test in tests/distributed, started before the first of them."""

from __future__ import annotations

import pytest

from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.ray_internals import poll_workers_often


@pytest.fixture(scope="session", autouse=True)
def ray_cluster():
    # Read by processes the local cluster starts, so it must be set before ray.init.
    poll_workers_often()
    init_ray(num_cpus=2)
    yield
