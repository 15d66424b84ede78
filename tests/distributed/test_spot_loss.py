"""A worker node lost while a fold trains inside its Tune trial (a spot instance reclaimed): the trial is retried on
another node from its last checkpoint and the CV finishes, no epoch trained twice or skipped beyond the one in
flight. A node drained with notice (preemption) first is not counted against ``--max-failures``.

A head with no CPUs (as cluster.yaml's) and 1-CPU worker nodes (``ray.cluster_utils.Cluster``), so the trial runs
on a worker node that can be removed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from nnunet_ray.config import CVConfig, TrainConfig
from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.cv import run_cv
from tests.training.conftest import build_tiny_task

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))
EPOCHS = 5


@pytest.fixture(scope="module")
def cluster():
    """Replaces the session's cluster with a 0-CPU head and three 1-CPU workers for this module (each test takes one
    away), then restores it."""
    ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(3):
        nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, logging_level="WARNING")
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()
    init_ray(num_cpus=2)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return build_tiny_task(tmp_path_factory.mktemp("spot"), cases=6, folds=3)


def _trial_node(cluster: Cluster):
    """The worker node whose process runs the (one) Tune trial, from the GCS actor table: the newest live trial
    actor (Tune's function-trainable class, ``ImplicitFunc``, qualified after the first experiment) on a node that is
    still part of the cluster."""
    nodes = {n.node_id: n for n in cluster.worker_nodes}
    trials = [a for a in ray._private.state.actors().values() if a["State"] == "ALIVE"
              and a["ActorClassName"].endswith("ImplicitFunc") and a["Address"]["NodeID"] in nodes]
    newest = max(trials, key=lambda a: a["StartTime"], default=None)

    return None if newest is None else nodes[newest["Address"]["NodeID"]]


def _lose_node_mid_run(cluster: Cluster, run: Path, *, notice: bool, seen: dict) -> None:
    """Once a checkpoint of epoch 1 or later exists, take away the trial's node (after a preemption notice when
    ``notice``)."""
    deadline = time.monotonic() + 300
    while _latest_epoch(run) < 1 and time.monotonic() < deadline:  # Tune keeps only the best and the latest
        time.sleep(0.1)
    node = None
    while node is None and time.monotonic() < deadline:  # the actor table may lag a moment behind the trial
        node = _trial_node(cluster)
    seen["before"] = _latest_epoch(run)
    if notice:
        subprocess.run([RAY, "drain-node", "--address", cluster.address, "--node-id", node.node_id,
                        "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaimed",
                        "--deadline-remaining-seconds", "1"], check=True, capture_output=True)
    seen.update(node=node.node_id, lost_at=time.time())
    cluster.remove_node(node, allow_graceful=False)


def _latest_epoch(run: Path) -> int:
    return max((int(p.name.split("_")[1]) for p in run.glob("epoch_*")), default=-1)


@pytest.mark.parametrize("notice, max_failures", [(False, 1), (True, 0)], ids=["killed", "drained-with-notice"])
def test_a_lost_worker_node_retries_the_trial_elsewhere_from_its_checkpoint(cluster, task, tmp_path, notice,
                                                                           max_failures):
    results = tmp_path / "results"
    run = results / "cv" / "3d_fold0"
    seen: dict = {}
    loser = threading.Thread(target=_lose_node_mid_run, args=(cluster, run), kwargs={"notice": notice, "seen": seen})
    loser.start()
    train = TrainConfig(max_epochs=EPOCHS, min_epochs=1, train_batches=40, batch_size=2, dali_threads=1, warmup=0,
                        image_every=0, max_failures=max_failures)
    run_cv(CVConfig(data=str(task), results=str(results), folds="0", name="cv", train=train))
    loser.join()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["engine"] == "tune" and summary["epochs"] == EPOCHS
    assert summary["node_id"] != seen["node"], (summary, seen)  # finished on another node
    # Resumed right after the newest checkpoint the lost attempt reported: every epoch reported to Tune once, in
    # order, across both attempts (only the epoch in flight when the node went is trained again).
    assert summary["start_epoch"] >= seen["before"] + 1
    reported = [json.loads(line)["epoch"] for line in (run / "result.json").read_text().splitlines()]
    assert reported == list(range(EPOCHS))
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(EPOCHS))
    print(f"node lost at epoch {seen['before'] + 1}; resumed at {summary['start_epoch']}; "
          f"{summary['finished_at'] - seen['lost_at']:.1f} s from the loss to the end")
