"""Ray clusters on one machine for the end-to-end tests and the job benchmarks, as Ray's ``ray.cluster_utils`` is for
Ray's own tests: a real ``ray start --head`` (token authentication on, every port free-picked, so it never collides
with another cluster on the machine) that jobs are submitted to with ``ray job submit``.

A head runs in its own process group and is stopped by killing that group: ``ray stop`` would end every Ray cluster
on the machine, the user's included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from nnunet_ray.runs.summary import run_summaries

RAY = str(Path(sys.executable).with_name("ray"))  # the CLI of this environment's Ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env() -> dict[str, str]:
    """The environment of a job's cluster: no inherited cluster address or repository path; token auth on; the
    head's `python` is this one (as on a node running the project's image)."""
    # RAY_API_SERVER_ADDRESS too: `ray job submit` prefers it over --address.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    return {**env, "RAY_AUTH_MODE": "token", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


@contextlib.contextmanager
def running_head(command: list[str], env: dict[str, str], address: str, *, start_env: dict[str, str] | None = None,
                 timeout: float = 120) -> Iterator[None]:
    """Run a blocking `ray start --head ...` ``command`` in its own process group until its job server at ``address``
    answers; stop it on exit even after an error (killing the group ends this cluster only: `ray stop` would end
    every cluster on the machine)."""
    head = subprocess.Popen(command, env=start_env or env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(command[:3])} did not come up")
            time.sleep(2)
        yield
    finally:
        stop_group(head)


def stop_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM ``process``'s group, then SIGKILL what is left after ``grace`` seconds (`ray start --block` spends
    ~30 s stopping its processes one by one on SIGTERM; a test cluster has nothing worth the wait)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_agent_ports() -> list[str]:
    """Flags moving the job agent's and metrics' fixed default ports to free ones: another Ray node on this machine
    may hold the defaults."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}"]


@contextlib.contextmanager
def local_head(num_cpus: int = 2) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `ray start --head` cluster (dashboard and job server on free ports); yields (job server address, env)."""
    env = job_env()
    dashboard = free_port()
    command = [RAY, "start", "--head", "--block", "--num-cpus", str(num_cpus), "--port", str(free_port()),
               "--dashboard-port", str(dashboard), "--include-dashboard", "true", *free_agent_ports(),
               "--disable-usage-stats"]
    address = f"http://127.0.0.1:{dashboard}"
    with running_head(command, env, address):
        yield address, env


def submit_job(address: str, env: dict[str, str], script: Path, job_dir: Path, args: list[str],
               timeout: float = 1500, upload: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    """`ray job submit -- python SCRIPT ARGS` with the script copied alone into ``job_dir`` (the working directory
    uploaded with the job; with ``upload=False`` the script runs from ``job_dir`` by its path, which the head must
    see); returns the finished `ray job submit` and its seconds from submit to end."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / script.name).write_bytes(script.read_bytes())
    where = ["--working-dir", str(job_dir)] if upload else []
    entry = script.name if upload else str(job_dir / script.name)
    start = time.perf_counter()
    for _ in range(10):  # the job server answers before the head's job agent is up: wait for the agent
        submit = subprocess.run([RAY, "job", "submit", "--address", address, *where, "--", "python", entry, *args],
                                env=env, capture_output=True, text=True, timeout=timeout)
        if "No available agent to submit job" not in submit.stderr + submit.stdout:
            break
        time.sleep(2)
    return submit, time.perf_counter() - start


def training_seconds(results: Path) -> float:
    """Wall seconds during which at least one trial's workers were training (the union of the trials' in-worker
    ``fit`` intervals from their summary.json): the rest of a job's time is start-up, scheduling, preprocessing,
    evaluation and prediction."""
    intervals = sorted((s.finished_at - s.seconds_in_worker, s.finished_at)
                       for s in run_summaries(results, recursive=True) if s.seconds_in_worker)
    covered, end = 0.0, float("-inf")
    for begin, finish in intervals:
        covered += max(0.0, finish - max(begin, end))
        end = max(end, finish)
    return covered
