# The image every cluster node runs (cluster.yaml's docker.image). Build and push it to your registry:
#   docker build -t <registry>/nnunet-ray:0.1.0 . && docker push <registry>/nnunet-ray:0.1.0
# CUDA 12 runtime: PyPI's torch wheels bundle their CUDA libraries, DALI is nvidia-dali-cuda120.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# python3.11 for the pinned wheels; rsync/openssh for `ray up` file mounts; tini reaps Ray's processes.
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv rsync openssh-client tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

WORKDIR /opt/nnunet_ray
# Dependencies first (cached layer), then the code.
COPY pyproject.toml constraints.txt README.md ./
COPY nnunet_ray/__init__.py nnunet_ray/__init__.py
RUN pip install -c constraints.txt -e .
COPY nnunet_ray nnunet_ray
COPY scripts scripts

# Ray's docker integration runs commands inside this container; the results root is mounted or on s3/gs.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["bash"]
