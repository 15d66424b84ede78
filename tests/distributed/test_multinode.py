"""Three Ray nodes on one machine (``ray.cluster_utils.Cluster``): preprocessing output lands under the one s3://
results root whichever node wrote it, each node stages a dataset once however many workers start together, and
the storage probe visits every node, and a fold survives losing a worker node. Each node gets its own staging
folder (``NNUNET_RAY_STAGE_DIR``), as separate machines have their own disks."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nnunet_ray.config import PreprocessConfig
from nnunet_ray.data import staging, storage
from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.preprocess import preprocess_dataset
from nnunet_ray.distributed.probe import alive_nodes, probe_storage

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Replaces the session's one-node cluster with three 1-CPU nodes for this module, then restores it."""
    stage = tmp_path_factory.mktemp("stage")
    ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "env_vars": {staging.STAGE_DIR_ENV: str(stage / "node0")}})
    for index in range(1, NODES):
        nodes.add_node(num_cpus=1, env_vars={staging.STAGE_DIR_ENV: str(stage / f"node{index}")})
    ray.init(address=nodes.address, logging_level="WARNING")
    nodes.wait_for_nodes()
    yield SimpleNamespace(stage=stage, nodes=nodes)
    ray.shutdown()
    nodes.shutdown()
    init_ray(num_cpus=2)


@ray.remote(num_cpus=0)
def _stage_here(location: str, key: str) -> tuple[str, str]:
    return ray.get_runtime_context().get_node_id(), str(staging.stage_folder(location, key))


def test_the_probe_visits_every_node(cluster, tmp_path):
    assert probe_storage(readable={}, results=str(tmp_path / "results")) == NODES


def test_preprocessing_on_three_nodes_lands_under_one_s3_root(cluster, synth_task, s3_root):
    summary = preprocess_dataset(PreprocessConfig(data=str(synth_task), results=s3_root, dim=3, nfolds=3))
    assert summary.ok and len(summary.done) == 6
    names = set(storage.list_names(summary.out_dir))
    assert {f"{case_id}_x.npy" for case_id in summary.done} <= names
    assert {"plans.json", "fingerprint.json", "splits.json"} <= names
    # The GCS actor table (no dashboard in this test cluster): where Ray Data's case mappers ran.
    mappers = [a for a in ray._private.state.actors().values() if "MapWorker" in a["ActorClassName"]]
    assert len({a["Address"]["NodeID"] for a in mappers}) > 1  # the cases were written from several nodes


def test_each_node_stages_a_dataset_once_when_its_workers_start_together(cluster, s3_root, tmp_path):
    src = tmp_path / "pre"
    src.mkdir()
    for i in range(4):
        (src / f"case{i}_x.npy").write_bytes(os.urandom(200_000))
    location = storage.join(s3_root, "pre")
    storage.upload(src, location)

    refs = [_stage_here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
            .remote(location, "Task_3d_abc") for node in alive_nodes() for _ in range(2)]  # two workers per node
    answers = ray.get(refs)
    assert len({node for node, _ in answers}) == NODES
    for index in range(NODES):
        root = cluster.stage / f"node{index}"
        assert len(staging.staged_copies(root)) == 1  # one download per node
        assert sorted(p.name for p in (root / "Task_3d_abc").iterdir() if p.name != staging.MARKER) == \
            sorted(p.name for p in src.iterdir())


def _train_worker_nodes() -> set[str]:
    return {a["Address"]["NodeID"] for a in ray._private.state.actors().values()
            if "RayTrainWorker" in a["ActorClassName"] and a["State"] == "ALIVE"}


def test_removing_a_worker_node_mid_fold_still_finishes_the_fold(cluster, tmp_path):
    """Last in the module: it takes a node away for good."""
    import threading
    import time

    from nnunet_ray.config import TrainConfig
    from nnunet_ray.distributed.train import train_fold
    from nnunet_ray.training.logs import read_metrics
    from tests.training.conftest import build_tiny_task

    task = build_tiny_task(tmp_path / "task", dim=3)
    cfg = TrainConfig(data=str(task), results=str(tmp_path / "results"), dim=3, workers=2, max_epochs=25,
                      min_epochs=25, warmup=0, batch_size=2, dali_threads=1, image_every=0, max_failures=3)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(summary=train_fold(cfg)), daemon=True)
    runner.start()
    metrics = tmp_path / "results" / "Task97_Tiny_3d_fold0" / "metrics.jsonl"
    deadline = time.time() + 300
    while len(read_metrics(metrics)) < 3 and time.time() < deadline:  # a few epochs, so a checkpoint exists
        time.sleep(0.2)
    head = ray.get_runtime_context().get_node_id()
    victims = [n for n in cluster.nodes.worker_nodes if n.node_id in _train_worker_nodes() - {head}]
    assert victims, "no training worker on a removable node"
    removed_at = len(read_metrics(metrics))
    assert runner.is_alive() and removed_at < 25  # mid-fold
    cluster.nodes.remove_node(victims[0], allow_graceful=False)  # a spot node gone without notice
    runner.join(timeout=600)
    assert outcome["summary"]["epochs"] == 25
    assert [r["epoch"] for r in read_metrics(metrics)] == list(range(25))  # resumed: nothing repeated or skipped
