"""`make gpu-check`'s script: its CPU smoke path end to end (what CI can run), and its exit status on a failure."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_any_failed_check_exits_non_zero_and_the_others_still_run(tmp_path, capsys, monkeypatch):
    gpu_check = _module()

    def boom(ctx):
        raise RuntimeError("no luck")

    ran = []
    monkeypatch.setattr(gpu_check, "CHECKS", {"boom": boom, "after": lambda ctx: ran.append(1) or {"x": 1}})
    assert gpu_check.main(["--cpu", "--workdir", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] is False and report["failed"] == ["boom"] and ran == [1]
    assert report["checks"]["boom"]["error"] == "RuntimeError: no luck"
    assert report["checks"]["after"]["status"] == "ok"


@pytest.mark.slow
def test_cpu_smoke_path_runs_every_check_and_skips_only_cuda_ones(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--workdir", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = {name: check["status"] for name, check in report["checks"].items()}
    assert statuses == {"train": "ok", "dali_gpu": "skipped", "ddp_nccl": "skipped", "shared_gpu": "skipped",
                        "benchmark": "ok", "predict": "ok"}
    assert report["checks"]["train"]["epochs"] == 2 and report["checks"]["benchmark"]["img_per_s"] > 0
    assert report["checks"]["benchmark"]["reference_img_per_s_1xA100"] == 16.0
