"""Shared pytest fixtures for every stage's tests.

Synthetic tasks are session-scoped: each is written once per test run (well under a second) and must be
treated as read-only by tests; copy it to ``tmp_path`` before modifying anything. All are MSD v1 folders
(see ``nnunet_ray.data.synth``) with 6 training and 2 test cases of about 32 voxels in-plane, 8-11 slices,
classes 0 background, 1 organ, 2 lesion, 3 spot.

Add new shared fixtures below with a one-line docstring each; stage-specific fixtures belong in that
stage's own ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nnunet_ray.config import SynthConfig
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.planning.patch import synthetic_plans
from nnunet_ray.planning.schema import Plans

SYNTH_CASES = 6
SYNTH_TEST = 2
SYNTH_SIZE = 32


def make_test_plans(dim: int = 3, **fields) -> Plans:
    """Plans for hand-built tests: 1 MRI channel, 3 classes, a 16-voxel patch with the rule's topology at 1 mm and
    filters 4, 8, 16, ...; ``fields`` then replace any field verbatim (the topology is not re-derived)."""
    plans = synthetic_plans(dim, (16,) * dim, n_classes=3, dataset="Task99_Test")
    plans = dataclasses.replace(plans, filters=[4 * 2**i for i in range(len(plans.strides))])
    return dataclasses.replace(plans, **fields)


def _make(factory: pytest.TempPathFactory, name: str, **overrides) -> Path:
    base = factory.mktemp("synth")
    cfg = SynthConfig(out=str(base / name), cases=SYNTH_CASES, test=SYNTH_TEST, size=SYNTH_SIZE, seed=0, **overrides)
    return make_synthetic_task(cfg)


@pytest.fixture(scope="session")
def synth_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-channel MRI-like task folder ``Task99_Synth`` (read-only)."""
    return _make(tmp_path_factory, "Task99_Synth")


@pytest.fixture(scope="session")
def synth_task_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cases with CT intensities (HU, modality "CT"), folder ``Task98_SynthCT`` (read-only)."""
    return _make(tmp_path_factory, "Task98_SynthCT", ct=True)


@pytest.fixture(scope="session")
def synth_task_multimodal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two channels per case stored as 4D NIfTI, like MSD BraTS, folder ``Task97_SynthMM`` (read-only)."""
    return _make(tmp_path_factory, "Task97_SynthMM", modalities=2)


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1 for the whole session; yields its ``host:port``."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


def new_s3_root(server: str) -> str:
    """A fresh, empty bucket on the moto ``server`` (``host:port``), as an ``s3://`` results root."""
    import uuid

    import boto3

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=f"http://{server}", aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    # Credentials and endpoint travel in the URI, so Ray workers started before this fixture can open it too.
    return f"s3://test:test@{bucket}/root?endpoint_override={server}&scheme=http&region=us-east-1"


@pytest.fixture
def s3_root(s3_server, request):
    """A fresh, empty bucket on ``s3_server``, as an ``s3://`` results root that any Ray worker can open."""
    return new_s3_root(s3_server)
