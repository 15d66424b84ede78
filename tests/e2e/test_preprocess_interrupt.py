"""Killing preprocessing midway (SIGKILL of the whole process group) and rerunning finishes the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from nnunet_ray.config import PreprocessConfig, SynthConfig
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.preprocess import preprocess_dataset

CASES = 8


def _finished(out_dir) -> list[str]:
    return sorted(p.stem for p in out_dir.glob("*.json") if p.stem not in ("plans", "fingerprint", "splits"))


def _run_until_some_cases_finish(raw, results, out_dir, *, timeout=180.0) -> None:
    cmd = [sys.executable, "-m", "nnunet_ray.cli", "preprocess", "--data", str(raw), "--results", str(results),
           "--num-workers", "1"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out_dir.exists() and len(_finished(out_dir)) >= 2:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait()


def test_killed_preprocessing_resumes_and_finishes(tmp_path):
    raw = tmp_path / "raw" / "Task96_Interrupt"
    make_synthetic_task(SynthConfig(out=str(raw), cases=CASES, test=0, size=48, seed=5))
    results = tmp_path / "pre"
    out_dir = results / raw.name / "3d"
    _run_until_some_cases_finish(raw, results, out_dir)
    before = _finished(out_dir)
    assert 2 <= len(before) < CASES, f"kill came too late or too early: {before}"

    init_ray(num_cpus=2)
    summary = preprocess_dataset(PreprocessConfig(data=str(raw), results=str(results), dim=3))
    assert summary.ok
    assert set(before) <= set(summary.skipped)
    assert len(summary.done) + len(summary.skipped) == CASES
    for case_id in _finished(out_dir):
        props = json.loads((out_dir / f"{case_id}.json").read_text())
        assert np.load(out_dir / f"{case_id}_x.npy").shape[1:] == tuple(props["shape"])
    assert not [p for p in out_dir.iterdir() if ".tmp" in p.name]
