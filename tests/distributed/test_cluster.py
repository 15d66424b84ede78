"""Ray's log noise is filtered by pattern, real errors pass; each local cluster gets its own State API address."""

import os

import ray

from nnunet_ray.distributed.cluster import STATE_API_ENV, _state_api_pinned, init_ray, is_ray_noise

SEEN = ("[36m(TrainController pid=15276)[0m [2026-11-29 09:10:09,162 E 15276 15649] core_worker.cc:2465: Actor with "
        "class name: 'PreemptionWatcher' and ID: '9c7c2a75b7fca4f31db375ce01000000' has constructor arguments in the "
        "object store and max_restarts > 0. If the arguments in the object store go out of scope or are lost, the "
        "actor restart will fail. See https://github.com/ray-project/ray/issues/53727 for more details.")


def test_constructor_argument_notice_is_noise():
    assert is_ray_noise(SEEN)
    assert is_ray_noise(SEEN.split("[0m ", 1)[1])  # printed by the driver itself, without the worker prefix


def test_real_errors_are_not_noise():
    for line in ("[2026-11-29 09:10:09,162 E 15276 15649] core_worker.cc:612: Failed to register worker to Raylet",
                 "(RayTrainWorker pid=1) RuntimeError: CUDA out of memory",
                 "core_worker.cc:2465: Actor with class name: 'X' died unexpectedly"):
        assert not is_ray_noise(line)


@ray.remote(num_cpus=0)
def _controller_is_alive(actor_id: str) -> bool:
    # What Ray Train's PlacementGroupCleaner asks, from inside the cluster, before freeing a stopped trial's workers.
    from ray.util.state import get_actor

    return get_actor(actor_id, timeout=10).state == "ALIVE"


@ray.remote(num_cpus=0)
class _Probe:
    def ping(self) -> bool:
        return True


def test_a_restarted_local_cluster_answers_state_queries_from_its_workers():
    # The multinode tests restart the session's cluster: the new one's cleaners must reach its own dashboard, or a
    # stopped trial's CPUs stay taken. The driver's own environment is left as it was: `ray job submit` from here
    # prefers RAY_API_SERVER_ADDRESS over its --address.
    ray.shutdown()
    init_ray(num_cpus=2)
    assert STATE_API_ENV not in os.environ
    probe = _Probe.remote()
    ray.get(probe.ping.remote())
    assert ray.get(_controller_is_alive.remote(probe._actor_id.hex()))


def test_a_state_api_address_set_by_the_user_is_kept(monkeypatch):
    monkeypatch.setenv(STATE_API_ENV, "http://10.0.0.1:8265")
    with _state_api_pinned() as port:
        assert port is None and os.environ[STATE_API_ENV] == "http://10.0.0.1:8265"
    assert os.environ[STATE_API_ENV] == "http://10.0.0.1:8265"


def test_an_autoscaling_cluster_is_sized_at_its_largest(tmp_path, monkeypatch):
    """On a `ray up` head the bootstrap config lists the node types: what the cluster holds at max_workers (the head
    once) counts, not the nodes up now; a fixed cluster counts what it has."""
    import yaml

    from nnunet_ray.distributed import cluster

    before = cluster.reachable_resources()
    assert before["CPU"] == 2 and cluster.can_reserve_memory()  # the session's fixed 2-CPU cluster
    config = {"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0, "nnunet_ray_driver": 64}},
        "gpu_1x": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 8},
        "gpu_8x": {"resources": {"CPU": 96, "GPU": 8, "memory": 9e11}, "min_workers": 0, "max_workers": 2}}}
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(cluster, "BOOTSTRAP_CONFIG", str(tmp_path / "ray_bootstrap_config.yaml"))
    reachable = cluster.reachable_resources()
    assert reachable["GPU"] == 8 * 1 + 2 * 8 and reachable["CPU"] == 8 * 8 + 2 * 96
    assert reachable["nnunet_ray_driver"] == 64
    assert cluster.can_reserve_memory()  # gpu_8x lists memory
    del config["available_node_types"]["gpu_8x"]["resources"]["memory"]
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    assert not cluster.can_reserve_memory()
