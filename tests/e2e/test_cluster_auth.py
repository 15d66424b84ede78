"""A head started exactly as cluster.yaml starts it (its `head_start_ray_commands`, with only the flags that need
the cloud launcher dropped and fixed ports moved to free ones) admits only jobs that carry the cluster's token, and
its dashboard / job server answers on the loopback only."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nnunet_ray.distributed.local_clusters import free_agent_ports, free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
LAUNCHER_ONLY = ("--autoscaling-config", "--object-manager-port")  # files and ports `ray up` provides


def head_command(*, port: int, dashboard_port: int, temp_dir: Path) -> str:
    """cluster.yaml's head `ray start` line, runnable here: launcher-only flags dropped, fixed ports made free,
    blocking so that the test owns the process group."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    line = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    words = [w for w in shlex.split(line.split(";", 1)[1]) if not w.startswith(LAUNCHER_ONLY)]
    words = [f"--port={port}" if w.startswith("--port=") else w for w in words]
    words[words.index("ray")] = RAY
    extra = [f"--dashboard-port={dashboard_port}", f"--temp-dir={temp_dir}", "--block", *free_agent_ports()]
    return shlex.join(words + extra)


def other_address() -> str | None:
    """An address of this machine other than the loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """The head, with HOME holding the cluster's token (as file_mounts puts it on every node); stopped after."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("nnunet-ray-test-token-" + "0" * 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH"))}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    dashboard = free_port()
    temp_dir = Path("/tmp") / f"nrauth{os.getpid()}"  # Ray's socket paths must stay short
    command = head_command(port=free_port(), dashboard_port=dashboard, temp_dir=temp_dir)
    process = subprocess.Popen(["bash", "-c", command], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not answers("127.0.0.1", dashboard):
            assert process.poll() is None and time.monotonic() < deadline, "the head did not come up"
            time.sleep(1)
        yield {"dashboard": dashboard, "env": env, "home": home}
    finally:
        stop_group(process)
        subprocess.run(["pkill", "-9", "-f", str(temp_dir)], check=False)


def _submit(head: dict, env: dict) -> subprocess.CompletedProcess:
    for _ in range(10):  # the dashboard answers before the head's job agent is up (as local_clusters.submit_job waits)
        done = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{head['dashboard']}", "--",
                               "python", "-c", "print('job ran')"], env=env, capture_output=True, text=True,
                              timeout=180)
        if "No available agent to submit job" not in done.stdout + done.stderr:
            break
        time.sleep(2)
    return done


def test_a_job_without_the_token_is_refused(head, tmp_path):
    stranger = {**head["env"], "HOME": str(tmp_path), "RAY_AUTH_MODE": "token"}  # no token file, no variable
    refused = _submit(head, stranger)
    assert refused.returncode != 0 and "job ran" not in refused.stdout
    assert "token" in (refused.stdout + refused.stderr).lower()


def test_a_job_with_the_token_runs(head):
    accepted = _submit(head, {**head["env"], "RAY_AUTH_MODE": "token"})
    assert accepted.returncode == 0, accepted.stdout[-2000:] + accepted.stderr[-2000:]
    assert "job ran" in accepted.stdout


def test_the_dashboard_answers_on_the_loopback_only(head):
    assert answers("127.0.0.1", head["dashboard"])
    address = other_address()
    if address is None:
        pytest.skip("this machine has no address besides the loopback")
    assert not answers(address, head["dashboard"])
