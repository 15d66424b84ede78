"""The Dockerfile builds on Ray's GPU image for the pinned Ray and Python, installs the exact pins and runs as non-root.

(Building it needs a Docker engine, which CI lacks: `make docker` does it; the build itself also fails when the
image's Ray differs from the pin.)"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _pin(name: str) -> str:
    return re.search(rf"^{name}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)


def test_base_image_is_rays_gpu_image_for_the_pinned_ray_and_python():
    image = re.search(r"^ARG RAY_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert image == f"rayproject/ray:{_pin('ray')}-py{sys.version_info.major}{sys.version_info.minor}-gpu"
    assert "FROM ${RAY_IMAGE}" in DOCKERFILE


def test_installs_the_exact_pins_and_runs_as_a_non_root_user():
    assert "pip install -c constraints.txt ." in DOCKERFILE  # nvidia-dali-cuda120 is a pinned dependency
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "docker build -t $(IMAGE) ." in (ROOT / "Makefile").read_text()


def test_the_build_fails_unless_torch_and_dali_are_cuda_builds_of_one_major_version():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_gpu_build", ROOT / "scripts" / "check_gpu_build.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert "python scripts/check_gpu_build.py" in DOCKERFILE
    assert check.gpu_build_problem("12.8", 12086) is None
    assert "CPU-only" in check.gpu_build_problem(None, 12086)  # what this CPU test machine has
    assert "no CUDA build" in check.gpu_build_problem("12.8", 0)
    assert "CUDA 11.8 but DALI for CUDA 12.x" in check.gpu_build_problem("11.8", 12086)
