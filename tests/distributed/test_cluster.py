"""Ray's log noise is filtered by pattern, real errors pass."""

from nnunet_ray.distributed.cluster import is_ray_noise

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
