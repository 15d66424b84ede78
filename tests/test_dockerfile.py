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
