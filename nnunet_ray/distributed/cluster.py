"""Joining or starting a Ray cluster, and reading its resources. The one place that calls ``ray.init``.

``init_ray("")`` joins the cluster named by ``RAY_ADDRESS`` when set (as inside ``ray job submit``), else starts a
local one; ``init_ray("auto")`` or ``init_ray("ray://host:10001")`` joins an existing cluster.
"""

from __future__ import annotations

import logging
import os
import sys

import ray


def init_ray(address: str = "", *, num_cpus: int | None = None) -> None:
    """Connect to (or start) Ray once per process; later calls are no-ops.

    Args:
        address: cluster address; empty means ``RAY_ADDRESS`` if set, else a new local cluster.
        num_cpus: CPUs of a new local cluster (ignored when joining one); None = all of this machine's.
    """
    if ray.is_initialized():
        return
    # The pipelines print their own progress; Ray's INFO chatter (dashboard URL, etc.) is noise here.
    kwargs = {"logging_level": logging.WARNING, "configure_logging": True}
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        ray.init(address=target, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    _quiet_ray_data()


def _quiet_ray_data() -> None:
    # Ray Data logs a multi-line INFO block per dataset; progress bars stay on a terminal, and the
    # pipelines print one line per case themselves, so plain logs (CI, `ray job logs`) stay readable.
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()


def cluster_cpus() -> int:
    """Total CPUs Ray sees in the cluster (all nodes)."""
    return int(ray.cluster_resources().get("CPU", 0))


def cluster_gpus() -> int:
    """Total GPUs Ray sees in the cluster (all nodes)."""
    return int(ray.cluster_resources().get("GPU", 0))


def node_memory() -> list[int]:
    """Schedulable memory of each alive node, in bytes (Ray's ``memory`` resource)."""
    return [int(node["Resources"].get("memory", 0)) for node in ray.nodes() if node.get("Alive")]
