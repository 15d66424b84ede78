"""Fails (exit 1, one line) unless torch and DALI are CUDA builds for the same CUDA major version.

    python -m nnunet_ray.loading.gpu_build     # the Dockerfile runs it; needs no GPU, only the installed wheels

torch reports its CUDA build as ``torch.version.cuda`` ("13.0"; None for a CPU wheel); the DALI wheel records the
CUDA it was built for as ``nvidia.dali.backend.__cuda_version__`` (13000 for 13.0). The driver on the nodes (the
AMI in cluster.yaml) must support that major version.
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
    if int(torch_cuda.split(".")[0]) != dali_cuda // 1000:
        return f"torch is built for CUDA {torch_cuda} but DALI for CUDA {dali_cuda // 1000}.x"
    return None


def main() -> int:
    import nvidia.dali.backend as dali
    import torch

    problem = gpu_build_problem(torch.version.cuda, getattr(dali, "__cuda_version__", None))
    if problem:
        sys.stderr.write(f"gpu_build: error: {problem}\n")
        return 1
    major, minor = divmod(dali.__cuda_version__, 1000)  # type: ignore[attr-defined]  # missing from DALI's stub
    sys.stdout.write(f"torch CUDA {torch.version.cuda}, DALI CUDA {major}.{minor // 10}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
