"""An autoscaling Ray cluster that starts empty, on one machine: Ray's own autoscaler with its fake multi-node provider
(``RAY_FAKE_CLUSTER=1``; each "node" it launches is a raylet on this machine), shaped like cluster.yaml: a head with
no CPUs holding the driver resource and token authentication, one 1-CPU worker type with ``min_workers: 0``.

Ray 2.60's wheel lacks the fake provider's ``example.yaml`` that ``ray.cluster_utils.AutoscalingCluster`` reads, and
``AutoscalingCluster`` runs ``ray stop --force``, which would end every Ray cluster on the machine: the head is
started here the way ``AutoscalingCluster.start`` starts it, in its own process group, with the autoscaling config at
``~/ray_bootstrap_config.yaml`` of its own HOME, as ``ray up`` writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from nnunet_ray.distributed.cluster import DRIVER_RESOURCE
from nnunet_ray.distributed.local_clusters import (
    RAY,
    free_agent_ports,
    free_port,
    running_head,
    submit_job,
    training_seconds,
)

WORKER_TYPE = "cpu_worker"
OBJECT_STORE = 300_000_000  # bytes per node: three raylets share this machine's /dev/shm


def fake_autoscaling_config(gcs_port: int, *, max_workers: int = 2) -> dict:
    """cluster.yaml's shape for the fake provider: a 0-CPU head with the driver resource, one 1-CPU worker type."""
    return {"cluster_name": "nnunet-ray-fake", "max_workers": max_workers, "upscaling_speed": 1.0,
            "idle_timeout_minutes": 1,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0, DRIVER_RESOURCE: 8}, "node_config": {}, "max_workers": 0},
                # No `memory`: the fake provider cannot start a node that lists it (`ray up` on AWS fills it in).
                WORKER_TYPE: {"resources": {"CPU": 1, "object_store_memory": OBJECT_STORE}, "node_config": {},
                              "min_workers": 0, "max_workers": max_workers}},
            "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [], "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": []}


@dataclass
class Head:
    """A running fake autoscaling head: its job address, the environment its clients use, its token."""

    address: str
    env: dict[str, str]
    token: str


@contextlib.contextmanager
def fake_autoscaling_head(home: Path) -> Iterator[Head]:
    """Start the head (its HOME holding the token and the bootstrap config, as on a `ray up` head); stop it and every
    node its autoscaler launched on exit, even after an error."""
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    token = "nnunet-ray-fake-cluster-" + "1" * 40
    (home / ".ray" / "auth_token").write_text(token)
    gcs, dashboard = free_port(), free_port()
    config = home / "ray_bootstrap_config.yaml"
    config.write_text(yaml.safe_dump(fake_autoscaling_config(gcs)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH"))}
    env.update(HOME=str(home), RAY_AUTH_MODE="token", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    temp_dir = Path(tempfile.gettempdir()) / f"nras{os.getpid()}"  # Ray's socket paths must stay short
    command = [RAY, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
               f"--autoscaling-config={config}", "--num-cpus=0", f"--resources={json.dumps({DRIVER_RESOURCE: 8})}",
               f"--object-store-memory={OBJECT_STORE}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
               *free_agent_ports()]
    address = f"http://127.0.0.1:{dashboard}"
    try:
        with running_head(command, env, address, timeout=180,
                          start_env={**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}):
            yield Head(address=address, env=env, token=token)
    finally:
        subprocess.run(["pkill", "-9", "-f", str(temp_dir)], check=False)  # nodes the autoscaler started


def state_api(head: Head, resource: str) -> list[dict]:
    """Rows of the head's State API (``nodes``, ``actors``), as its REST endpoint serves them to token holders."""
    request = urllib.request.Request(f"{head.address}/api/v0/{resource}?limit=10000&detail=1",
                                     headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]["result"]["result"]


class NodeRecorder(threading.Thread):
    """Polls the alive nodes every ``every`` seconds until stopped: [(unix time, alive worker nodes)]."""

    def __init__(self, head: Head, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.head, self.every = head, every
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError):
                nodes = state_api(self.head, "nodes")
                workers = sum(1 for n in nodes if n["state"] == "ALIVE" and not n["is_head_node"])
                self.samples.append((time.time(), workers))
            self._stop_event.wait(self.every)

    def stop(self) -> list[tuple[float, int]]:
        self._stop_event.set()
        self.join()
        return self.samples


def run_smoke_job(head: Head, work: Path, five_fold: Path) -> dict:
    """Submit ``five_fold`` (jobs/five_fold.py) ``--smoke-test`` to ``head`` while recording the node count; returns
    what it measured."""
    recorder = NodeRecorder(head)
    recorder.start()
    submitted = time.time()
    # The script by its path, no uploaded working directory: the fake nodes share this machine's session folder, so
    # a node's runtime-env agent freeing the job's unpacked working directory would pull it from under the driver.
    submit, seconds = submit_job(head.address, head.env, five_fold, work / "job",
                                 ["--smoke-test", "--results", str(work / "results")], upload=False)
    samples = recorder.stop()
    joined = {k: next((t - submitted for t, n in samples if n >= k), None) for k in (1, 2)}
    return {"submit": submit, "seconds": seconds, "samples": samples, "first_node_s": joined[1],
            "second_node_s": joined[2], "peak_nodes": max((n for _, n in samples), default=0),
            "training_share": training_seconds(work / "results") / seconds}
