"""The five-fold smoke job on a cluster that starts empty and grows: Ray's own autoscaler on one machine.

    python scripts/bench_autoscaling.py

Starts a head shaped like cluster.yaml's (no CPUs, the `nnunet_ray_driver` resource, token authentication) with
Ray's autoscaler and its fake multi-node provider (`RAY_FAKE_CLUSTER=1`; each "node" it launches is a raylet on this
machine) and one worker type of 1 CPU with min_workers 0, max_workers 2. The autoscaling config is the head's
`~/ray_bootstrap_config.yaml`, as `ray up` writes it. Then `ray job submit`s `jobs/five_fold.py --smoke-test` and
prints: submit -> SUCCEEDED, seconds until the first and the second worker node joined, the peak node count, and the
share of the job's wall during which a trial was training. tests/e2e/test_autoscaling.py runs the same functions.
(Ray 2.60's wheel lacks the fake provider's example.yaml that `ray.cluster_utils.AutoscalingCluster` reads, and
`AutoscalingCluster` runs `ray stop --force`, which would end every Ray cluster on the machine: the head is
started here the way `AutoscalingCluster.start` starts it, in its own process group.)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_jobs.py beside this file
from bench_jobs import (RAY, free_agent_ports, free_port, running_head, submit_five_fold,  # noqa: E402
                        training_seconds)

DRIVER_RESOURCE = "nnunet_ray_driver"
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
        self.head, self.every, self.samples = head, every, []
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


def run_smoke_job(head: Head, work: Path) -> dict:
    """Submit the smoke job to ``head`` while recording the node count; returns what it measured."""
    recorder = NodeRecorder(head)
    recorder.start()
    submitted = time.time()
    # The script by its path, no uploaded working directory: the fake nodes share this machine's session folder, so
    # a node's runtime-env agent freeing the job's unpacked working directory would pull it from under the driver.
    submit, seconds = submit_five_fold(head.address, head.env, work / "job",
                                       ["--smoke-test", "--results", str(work / "results")], upload=False)
    samples = recorder.stop()
    joined = {k: next((t - submitted for t, n in samples if n >= k), None) for k in (1, 2)}
    return {"submit": submit, "seconds": seconds, "samples": samples, "first_node_s": joined[1],
            "second_node_s": joined[2], "peak_nodes": max((n for _, n in samples), default=0),
            "training_share": training_seconds(work / "results") / seconds}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, fake_autoscaling_head(Path(tmp) / "home") as head:
        result = run_smoke_job(head, Path(tmp))
        if result["submit"].returncode != 0:
            print(result["submit"].stdout[-4000:] + result["submit"].stderr[-2000:], file=sys.stderr)
            print("bench_autoscaling: error: the smoke job failed", file=sys.stderr)
            return 1
    print(f"five_fold.py --smoke-test on an autoscaling cluster that starts empty: submit -> SUCCEEDED "
          f"{result['seconds']:.1f} s; first worker node up {result['first_node_s']:.0f} s and second "
          f"{result['second_node_s']:.0f} s after the submit; peak {result['peak_nodes']} worker nodes; "
          f"training {result['training_share']:.0%} of the job's wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
