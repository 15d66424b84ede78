"""The `jobs/` entry points as users run them: copied alone to an empty folder (the launcher's `ray submit`), and
submitted to a real cluster started with `ray start --head` through the real job API (`ray job submit`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "jobs").glob("*.py"))
RAY = str(Path(sys.executable).with_name("ray"))


def _alone(script: Path, folder: Path) -> Path:
    """``script`` copied into an otherwise empty ``folder``: no repository next to it or on the path."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(script, folder / script.name))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}


@pytest.mark.parametrize("script", JOBS, ids=lambda p: p.name)
def test_job_script_needs_only_the_installed_package(script, tmp_path):
    copy = _alone(script, tmp_path / "job")
    result = subprocess.run([sys.executable, str(copy), "--help"], cwd=tmp_path / "job", env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout and "nnunet_ray" not in result.stderr


def test_five_fold_without_data_is_one_line_error(tmp_path):
    copy = _alone(ROOT / "jobs" / "five_fold.py", tmp_path / "job")
    result = subprocess.run([sys.executable, str(copy), "--results", str(tmp_path / "r")], cwd=tmp_path / "job",
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == ("five_fold: error: --data is required (a raw dataset "
                                                      "folder), unless --smoke-test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A real `ray start --head` cluster (2 CPUs, dashboard + job server) in its own process group, stopped after
    the test even when it fails (killing the group ends this cluster only: `ray stop` would end every cluster)."""
    gcs, dashboard = _free_port(), _free_port()
    # The job's `python` is the head node's: this environment's, as on a node running the project's image.
    env = {**_env(), "RAY_AUTH_MODE": "token",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs),
                             "--dashboard-port", str(dashboard), "--include-dashboard", "true",
                             # the job agent's default ports are fixed: another Ray node on this machine may hold them
                             "--dashboard-agent-listen-port", str(_free_port()),
                             "--dashboard-agent-grpc-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
                             "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode:
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(2)
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


@pytest.mark.slow
def test_five_fold_smoke_job_through_ray_job_submit(ray_head, tmp_path):
    address, env = ray_head
    job_dir = tmp_path / "job"
    _alone(ROOT / "jobs" / "five_fold.py", job_dir)
    results = tmp_path / "results"
    start = time.perf_counter()
    for _ in range(10):  # the job server answers before the head's job agent is up: wait for the agent
        submit = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", str(job_dir), "--",
                                 "python", "five_fold.py", "--smoke-test", "--results", str(results)],
                                env=env, capture_output=True, text=True, timeout=1500)
        if "No available agent to submit job" not in submit.stderr + submit.stdout:
            break
        time.sleep(2)
    seconds = time.perf_counter() - start
    assert submit.returncode == 0 and "succeeded" in submit.stdout, submit.stdout[-4000:] + submit.stderr[-2000:]
    print(f"ray job submit -> SUCCEEDED in {seconds:.0f} s")
    experiment = results / "Task99_Synthetic_five_fold"
    summary = json.loads((experiment / "cv_summary.json").read_text())
    assert summary, "empty CV summary"
    assert (experiment / "cv_original_space.csv").is_file()
    predictions = sorted((experiment / "test_predictions").glob("*.nii.gz"))
    assert [p.name for p in predictions] == ["synth_010.nii.gz", "synth_011.nii.gz"]
    events = list(experiment.rglob("events.out.tfevents.*"))
    assert len({e.parent.parent for e in events}) >= 2, "TensorBoard events for every trial"
