# The image every cluster node runs (cluster.yaml's docker.image). Build it with `make docker`
# (IMAGE=<registry>/nnunet-ray:<tag>), then `docker push` it to a registry the cluster can pull from.
#
# Base: Ray's own GPU image for the Ray and Python versions the project pins (ray==2.60.0 in constraints.txt,
# Python 3.11), so the cluster launcher, the Jobs server and the workers all run the same Ray. It already runs as
# the non-root user `ray` with Python in /home/ray/anaconda3; the CUDA libraries torch and DALI need come with their
# PyPI wheels, pinned in constraints-gpu.txt: torch 2.13.0 from PyPI is a CUDA 13.0 build, so the image swaps the
# project's default DALI (nvidia-dali-cuda120, what CI installs) for the CUDA 13 build of the same version.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

USER ray
WORKDIR /home/ray/nnunet_ray

# Dependencies first (a cached layer as long as the pins do not change), then the code.
COPY --chown=ray:users pyproject.toml constraints.txt constraints-gpu.txt README.md ./
COPY --chown=ray:users nnunet_ray/__init__.py nnunet_ray/__init__.py
RUN pip install -c constraints.txt -c constraints-gpu.txt . \
    && pip uninstall -y nnunet-ray nvidia-dali-cuda120 nvidia-libnvcomp-cu12 nvidia-nvimgcodec-cu12 nvidia-nvjpeg-cu12 \
        nvidia-nvjpeg2k-cu12 nvidia-nvtiff-cu12 \
    && pip install -c constraints.txt -c constraints-gpu.txt nvidia-dali-cuda130
COPY --chown=ray:users nnunet_ray nnunet_ray
COPY --chown=ray:users scripts scripts
# Exact pins (DALI included), and the image's Ray must be the pinned one: a mismatch fails the build here,
# not later as a cluster whose nodes disagree. A torch or DALI without CUDA (a CPU wheel from another index) or
# built for another CUDA major version fails it too: GPU nodes would otherwise train on their CPUs.
RUN pip install --no-deps . \
    && test "$(python -c 'import ray; print(ray.__version__)')" = "$(sed -n 's/^ray==//p' constraints.txt)" \
    && python -c "import nnunet_ray.cli, pyarrow.fs" \
    && python -m nnunet_ray.loading.gpu_build

CMD ["bash"]
