"""Benchmark: the five-fold smoke job through the real job API, results on a local path vs on object storage.

    python scripts/bench_jobs.py           # needs the test extras: moto[server] is the S3 stand-in

Starts a throwaway cluster (`ray start --head`, 2 CPUs, dashboard and job server on free ports), then submits
`jobs/five_fold.py --smoke-test` with `ray job submit` twice: `--results` on a local folder, then on an `s3://`
bucket of a local S3-compatible server (moto). Prints the time from submit to SUCCEEDED of each and their ratio:
the overhead of object storage for the same job (same cluster, same synthetic task, same 1-epoch budget).
The e2e tests (tests/e2e/test_jobs.py) start their cluster and submit their jobs with the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
FIVE_FOLD = ROOT / "jobs" / "five_fold.py"


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


def submit_five_fold(address: str, env: dict[str, str], job_dir: Path, args: list[str],
                     timeout: float = 1500, upload: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    """`ray job submit -- python five_fold.py ARGS` with the script copied alone into ``job_dir`` (the working
    directory uploaded with the job; with ``upload=False`` the script runs from ``job_dir`` by its path, which the
    head must see); returns the finished `ray job submit` and its seconds from submit to end."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / FIVE_FOLD.name).write_bytes(FIVE_FOLD.read_bytes())
    where = ["--working-dir", str(job_dir)] if upload else []
    script = FIVE_FOLD.name if upload else str(job_dir / FIVE_FOLD.name)
    start = time.perf_counter()
    for _ in range(10):  # the job server answers before the head's job agent is up: wait for the agent
        submit = subprocess.run([RAY, "job", "submit", "--address", address, *where, "--", "python", script, *args],
                                env=env, capture_output=True, text=True, timeout=timeout)
        if "No available agent to submit job" not in submit.stderr + submit.stdout:
            break
        time.sleep(2)
    return submit, time.perf_counter() - start


@contextlib.contextmanager
def moto_bucket() -> Iterator[str]:
    """A local S3-compatible server (moto) with one empty bucket; yields an ``s3://`` root whose URI carries the
    endpoint and (dummy) credentials, so the job's processes need no environment of their own."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        fs, _ = pafs.FileSystem.from_uri(f"s3://test:test@{bucket}?{options}&allow_bucket_creation=true")
        fs.create_dir(bucket)
        yield f"s3://test:test@{bucket}/results?{options}"
    finally:
        server.stop()


def training_seconds(results: Path) -> float:
    """Wall seconds during which at least one trial's workers were training (the union of the trials' in-worker
    ``fit`` intervals from their summary.json): the rest of a job's time is start-up, scheduling, preprocessing,
    evaluation and prediction."""
    intervals = sorted((s["finished_at"] - s["seconds_in_worker"], s["finished_at"])
                       for s in (json.loads(p.read_text()) for p in results.rglob("summary.json"))
                       if s.get("seconds_in_worker") and s.get("finished_at"))
    covered, end = 0.0, float("-inf")
    for begin, finish in intervals:
        covered += max(0.0, finish - max(begin, end))
        end = max(end, finish)
    return covered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    with moto_bucket() as bucket, local_head() as (address, env), tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for label, results in (("local path", str(Path(tmp) / "results")), ("s3 (moto)", bucket)):
            submit, seconds[label] = submit_five_fold(address, env, Path(tmp) / "job", ["--smoke-test", "--results",
                                                                                       results])
            if submit.returncode != 0:
                print(submit.stdout[-4000:] + submit.stderr[-2000:], file=sys.stderr)
                print(f"bench_jobs: error: the {label} smoke job failed", file=sys.stderr)
                return 1
            print(f"five_fold.py --smoke-test, results on {label}: submit -> SUCCEEDED {seconds[label]:.1f} s",
                  flush=True)
            if label == "local path":
                training = training_seconds(Path(results))
                print(f"  of which training (any trial's workers in fit): {training:.1f} s; outside training "
                      f"(start-up, scheduling, preprocessing, evaluation, prediction): "
                      f"{1 - training / seconds[label]:.0%}", flush=True)
    print(f"object storage overhead: {seconds['s3 (moto)'] - seconds['local path']:+.1f} s "
          f"(x{seconds['s3 (moto)'] / seconds['local path']:.2f} the local path's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
