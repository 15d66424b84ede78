"""Joining or starting a Ray cluster, and reading its resources. The one place that calls ``ray.init``.

``init_ray("")`` joins the cluster named by ``RAY_ADDRESS`` when set (as inside ``ray job submit``), else starts a
local one; ``init_ray("auto")`` or ``init_ray("ray://host:10001")`` joins an existing cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import yaml

from nnunet_ray.data.credentials import forwarded_environment
from nnunet_ray.distributed import stopping
from nnunet_ray.distributed.ray_internals import DATA_PROGRESS_LOGGER, TOKEN_AUTH_LOGGER, worker_log_dispatcher

# A custom resource the on-demand head of cluster.yaml advertises: drivers that must outlive spot workers ask for it.
DRIVER_RESOURCE = "nnunet_ray_driver"


def init_ray(address: str = "", *, num_cpus: int | None = None) -> None:
    """Connect to (or start) Ray once per process; later calls are no-ops.

    Args:
        address: cluster address; empty means ``RAY_ADDRESS`` if set, else a new local cluster.
        num_cpus: CPUs of a new local cluster (ignored when joining one); None = all of this machine's.
    """
    if ray.is_initialized():
        return
    _quiet_token_auth_notice()
    # The pipelines print their own progress; Ray's INFO chatter (dashboard URL, etc.) is noise here.
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        ray.init(address=target, runtime_env=_credentials_runtime_env(), **kwargs)
    else:
        # A local cluster's processes inherit this process's environment, credentials taken from a URI included.
        # "local": a new cluster even when a `ray start` instance runs on this machine (plain ray.init() would
        # silently join the latest one, e.g. another user's on a shared machine).
        with _state_api_pinned() as dashboard_port:
            ray.init(address="local", num_cpus=num_cpus, dashboard_port=dashboard_port, **kwargs)
    _drop_forwarded_ray_noise()
    _quiet_ray_data()
    stopping.install()


def _credentials_runtime_env() -> dict | None:
    """The job's runtime environment on a cluster this process joins: the credentials ``into_environment`` took from
    a URI, which that cluster's workers do not inherit (they start from their node's environment). Ray keeps it in
    its job table (dashboard, ``ray list jobs``) and its runtime-env agent logs it on each node (see
    ``nnunet_ray.data.credentials``); None when no URI carried credentials."""
    env_vars = forwarded_environment()
    return {"env_vars": env_vars} if env_vars else None


STATE_API_ENV = "RAY_API_SERVER_ADDRESS"


@contextlib.contextmanager
def _state_api_pinned() -> Iterator[int | None]:
    """While a new local cluster starts, point its processes' State API at its own dashboard; yields the port.

    Ray Train frees the workers of a trial that Tune stopped (ASHA) from a cleaner actor that finds the cluster
    through the State API; with no address it auto-detects, which fails when one machine runs several Ray
    clusters ("Found multiple active Ray instances"), and the stopped trial's CPUs/GPUs then stay taken. The
    cluster's processes (and the workers they spawn) keep the value they start with; this process gets its
    environment back, because ``ray job submit`` and the State API prefer the variable over any ``--address``
    (a later cluster, or a job submitted from here, would otherwise go to this one). A value the user set is kept.
    """
    if os.environ.get(STATE_API_ENV):
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ[STATE_API_ENV] = f"http://127.0.0.1:{port}"
    try:
        yield port
    finally:
        del os.environ[STATE_API_ENV]


class _DropDefaultTokenAuthNotice(logging.Filter):
    """Drops Ray 2.60's notice that a new local cluster has token authentication on (its secure default): new users
    read the WARNING as a failure. Its other auth messages (auth disabled, bad tokens) still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _quiet_token_auth_notice() -> None:
    auth_logger = logging.getLogger(TOKEN_AUTH_LOGGER)
    if not any(isinstance(f, _DropDefaultTokenAuthNotice) for f in auth_logger.filters):
        auth_logger.addFilter(_DropDefaultTokenAuthNotice())


# Ray's core worker logs this at ERROR for every actor it creates with object-store constructor arguments and
# restarts enabled (ray-project/ray#53727): Ray Train's own controller actors trigger it on every run.
RAY_NOISE = re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store "
                       r"and max_restarts > 0")


def is_ray_noise(line: str) -> bool:
    """Whether a log line is one of Ray's internal notices that read like failures but are not."""
    return RAY_NOISE.search(line) is not None


def _drop_forwarded_ray_noise() -> None:
    """Filter ``is_ray_noise`` lines out of the worker logs Ray forwards to this driver; every other line passes."""
    dispatcher = worker_log_dispatcher()  # private: a missing one just leaves the logs as they are
    if dispatcher is None:
        return
    printer = next((handler for name, handler in dispatcher.handlers if name == "ray_print_logs"), None)
    if printer is None:  # log_to_driver=False: nothing is forwarded
        return

    def print_without_noise(data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not is_ray_noise(line)]
        if lines:
            printer({**data, "lines": lines})

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", print_without_noise)


def _quiet_ray_data() -> None:
    # Ray Data logs a multi-line INFO block per dataset; progress bars stay on a terminal, and the
    # pipelines print one line per case themselves, so plain logs (CI, `ray job logs`) stay readable.
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Ray Data then warns once that the bars are disabled: we chose that, so the WARNING would only alarm.
    logging.getLogger(DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()


# What `ray up` writes on the head: the cluster's node types, the file Ray Tune also reads to know it can autoscale
# (ray/tune/execution/cluster_info.py::_is_ray_cluster).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def autoscaler_config() -> dict | None:
    """The cluster's autoscaling config (node types with their resources and max_workers, the head's type), or None
    when this driver does not run on the head of an autoscaling cluster."""
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text()) or {}
    return config if config.get("available_node_types") else None


def reachable_resources() -> dict[str, float]:
    """What the cluster holds at its largest: the head plus every worker type at its max_workers on an autoscaling
    cluster, whatever is up now on a fixed one. Trials and prediction actors are sized from this, so an autoscaling
    cluster that starts empty is asked to grow instead of being judged by its head alone."""
    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    config = autoscaler_config()
    if config is None:
        return now
    total: dict[str, float] = {}
    for name, node_type in config["available_node_types"].items():
        count = 1 if name == config.get("head_node_type") else int(node_type.get("max_workers", 0))
        for kind, amount in (node_type.get("resources") or {}).items():
            total[kind] = total.get(kind, 0.0) + count * float(amount)
    return {kind: max(total.get(kind, 0.0), now.get(kind, 0.0)) for kind in {*total, *now}}


def can_reserve_memory() -> bool:
    """Whether tasks may reserve Ray's ``memory`` resource: always on a fixed cluster (every node has it); on an
    autoscaling one only when some worker type lists it (`ray up` fills it in on AWS), since the autoscaler launches
    no node for a demand it cannot see a node type for (Ray's fake multi-node provider cannot list it)."""
    config = autoscaler_config()
    if config is None:
        return True
    return any("memory" in (t.get("resources") or {}) for name, t in config["available_node_types"].items()
               if name != config.get("head_node_type"))


def cluster_cpus() -> int:
    """Total CPUs Ray sees in the cluster (all nodes)."""
    return int(ray.cluster_resources().get("CPU", 0))


def cluster_gpus() -> int:
    """Total GPUs Ray sees in the cluster (all nodes)."""
    return int(ray.cluster_resources().get("GPU", 0))


def node_memory() -> list[int]:
    """Schedulable memory of each alive node, in bytes (Ray's ``memory`` resource)."""
    return [int(node["Resources"].get("memory", 0)) for node in ray.nodes() if node.get("Alive")]
