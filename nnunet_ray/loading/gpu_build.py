"""Fails (exit 1, one line) unless torch and DALI are CUDA builds for the same CUDA major version.

    python -m nnunet_ray.loading.gpu_build     # the Dockerfile runs it; needs no GPU, only the installed wheels

torch reports its CUDA build as ``torch.version.cuda`` ("13.0"; None for a CPU wheel); the DALI wheel records the
CUDA it was built for as ``nvidia.dali.__cuda_version__``: the digits of the full version joined (12986 for
12.9.86, 1301 for 13.0.1), so its major version is its first two digits, as DALI's own ``backend.py`` reads it. The
driver on the nodes (the AMI in cluster.yaml) must support that major version.
"""

from __future__ import annotations

import sys


def gpu_build_problem(torch_cuda: str | None, dali_cuda: int | None) -> str | None:
    """What is wrong with the installed wheels' CUDA builds, or None when both are CUDA builds of one major version."""
    if not torch_cuda:
        return "torch is a CPU-only build (torch.version.cuda is None): install the CUDA wheel"
    if not dali_cuda:
        return ("DALI has no CUDA build: install the nvidia-dali-cuda1xx wheel of torch's CUDA major version "
                "(constraints-gpu.txt)")
    if int(torch_cuda.split(".")[0]) != dali_cuda_major(dali_cuda):
        return f"torch is built for CUDA {torch_cuda} but DALI for CUDA {dali_cuda_major(dali_cuda)}.x"
    return None


def dali_cuda_major(dali_cuda: int) -> int:
    """CUDA's major version from DALI's ``__cuda_version__`` (CUDA 10 and later: two digits)."""
    return int(str(dali_cuda)[:2])


def main() -> int:
    import nvidia.dali.backend as dali
    import torch

    problem = gpu_build_problem(torch.version.cuda, getattr(dali, "__cuda_version__", None))
    if problem:
        sys.stderr.write(f"gpu_build: error: {problem}\n")
        return 1
    major = dali_cuda_major(dali.__cuda_version__)  # type: ignore[attr-defined]  # missing from DALI's stub
    sys.stdout.write(f"torch CUDA {torch.version.cuda}, DALI CUDA {major}.x\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
