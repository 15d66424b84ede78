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
    assert "pip install -c constraints.txt -c constraints-gpu.txt ." in DOCKERFILE
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "docker build -t $(IMAGE) ." in (ROOT / "Makefile").read_text()


def test_the_build_fails_unless_torch_and_dali_are_cuda_builds_of_one_major_version():
    from nnunet_ray.loading.gpu_build import gpu_build_problem

    assert "python -m nnunet_ray.loading.gpu_build" in DOCKERFILE
    # DALI's __cuda_version__ joins the version's digits: int('12.9.86'.replace('.', '')) in the installed wheel.
    assert gpu_build_problem("12.8", 12986) is None and gpu_build_problem("13.0", 13048) is None
    assert gpu_build_problem("13.0", 1301) is None  # a CUDA 13.0.1 build: 1301 // 1000 would read it as CUDA 1
    assert "DALI for CUDA 12.x" in gpu_build_problem("13.0", 12986)
    assert "CPU-only" in gpu_build_problem(None, 12086)  # what this CPU test machine has
    assert "no CUDA build" in gpu_build_problem("12.8", 0)
    assert "CUDA 11.8 but DALI for CUDA 12.x" in gpu_build_problem("11.8", 12086)


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_gpu_pins_are_kept_apart_and_match_torch_and_dali():
    cpu, gpu = _pins("constraints.txt"), _pins("constraints-gpu.txt")
    assert not set(cpu) & set(gpu)  # one version per package: the image installs both files
    assert "torch" not in gpu and "nvidia-dali-cuda130" in gpu
    assert gpu["nvidia-dali-cuda130"] == cpu["nvidia-dali-cuda120"]  # the same DALI, built for torch's CUDA 13
    assert gpu["nvidia-cuda-runtime"].startswith("13.") and "nvidia-nccl-cu13" in gpu
    assert "pip install -c constraints.txt -c constraints-gpu.txt nvidia-dali-cuda130" in DOCKERFILE
    assert "constraints-gpu.txt" not in (ROOT / "Makefile").read_text()  # CI installs the CPU lock only
