"""Before any work: check that every alive node can read the input and write, and see, the results root.

A multi-node run whose workers cannot reach ``--data`` or ``--results`` fails late and scattered (a fold dies
after its workers start, preprocessed cases land on one node's local disk). ``probe_storage`` runs one tiny task
on every alive node (node-affinity scheduling, zero CPUs so busy nodes answer too) and raises one line naming the
node and the path at the first problem. The driver first writes a token under the results root and each node
must read it back, so a "results root" that is really each node's own local disk is caught as well.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nnunet_ray.config import ConfigError, flag_name
from nnunet_ray.data import storage

PROBE_DIR = ".nnunet_ray_probe"
PROBE_TIMEOUT_S = 120.0  # a node that cannot start a zero-CPU task in this time is as good as unreachable


@ray.remote(num_cpus=0, max_retries=0)
def _check_node(readable: dict[str, str], results_flag: str, results: str, token: str) -> str:
    """On one node: the first problem as ``"cannot ..."``, or "" when it can read and write everything."""
    for flag, location in readable.items():
        try:
            if not storage.exists(location):
                return f"cannot read {flag_name(flag)} {storage.display(location)}: not found"
        except Exception as err:  # noqa: BLE001 - any error is this node's answer, reported by the driver
            return f"cannot read {flag_name(flag)} {storage.display(location)}: {err}"
    probe = storage.join(results, PROBE_DIR, token, "driver")
    where = f"{flag_name(results_flag)} {storage.display(results)}"
    try:
        if storage.read_text(probe) != token:
            return f"sees a different {where} than the driver (use a shared filesystem or s3:// / gs://)"
    except FileNotFoundError:
        return f"does not see the {where} the driver wrote to (use a shared filesystem or s3:// / gs://)"
    except Exception as err:  # noqa: BLE001
        return f"cannot read {where}: {err}"
    try:
        storage.write_text(storage.join(results, PROBE_DIR, token, uuid.uuid4().hex[:8]), socket.gethostname())
    except Exception as err:  # noqa: BLE001
        return f"cannot write {where}: {err}"
    return ""


def alive_nodes() -> list[dict]:
    """``ray.nodes()`` entries of the nodes that are alive."""
    return [node for node in ray.nodes() if node.get("Alive")]


def probe_storage(*, readable: dict[str, str], results: str, results_flag: str = "results") -> int:
    """Check every alive node against the storage a run needs; call after ``init_ray``, before any work.

    Args:
        readable: config field name -> a location that must exist on every node (e.g. ``{"data": ".../plans.json"}``).
        results: the results root every node must be able to write and see the driver's writes in.
        results_flag: the config field ``results`` came from, for the message.

    Returns:
        The number of nodes probed.

    Raises:
        ConfigError: one line naming the first failing node (its IP and id) and the problem with the path.
    """
    token = uuid.uuid4().hex
    probe_dir = storage.join(results, PROBE_DIR, token)  # one folder per probe: concurrent jobs never collide
    try:
        storage.write_text(storage.join(probe_dir, "driver"), token)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{flag_name(results_flag)}: cannot write {storage.display(results)} "
                          f"from the driver ({err})") from err
    try:
        nodes = alive_nodes()
        refs = [_check_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote(readable, results_flag, results, token) for node in nodes]
        for node, ref in zip(nodes, refs):
            problem = _answer(ref)
            if problem:
                raise ConfigError(f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]}) {problem}")
    finally:
        _remove_quietly(probe_dir)
        if not storage.is_uri(results):  # an empty local folder would be left in the results root
            with contextlib.suppress(OSError):
                os.rmdir(storage.join(results, PROBE_DIR))  # fails (harmlessly) while another probe runs
    return len(nodes)


def _answer(ref: ray.ObjectRef) -> str:
    try:
        return ray.get(ref, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        return f"did not answer the storage probe within {PROBE_TIMEOUT_S:.0f} s"
    except ray.exceptions.RayError as err:
        return f"failed the storage probe: {type(err).__name__}"


def _remove_quietly(location: str) -> None:
    try:
        storage.delete(location)
    except OSError:  # leaving a few bytes of probe files behind is harmless
        pass
