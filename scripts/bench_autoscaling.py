"""The five-fold smoke job on a cluster that starts empty and grows: Ray's own autoscaler on one machine.

    python scripts/bench_autoscaling.py

Starts a head shaped like cluster.yaml's (no CPUs, the `nnunet_ray_driver` resource, token authentication) with
Ray's autoscaler and its fake multi-node provider (`RAY_FAKE_CLUSTER=1`; each "node" it launches is a raylet on this
machine) and one worker type of 1 CPU with min_workers 0, max_workers 2. The autoscaling config is the head's
`~/ray_bootstrap_config.yaml`, as `ray up` writes it. Then `ray job submit`s `jobs/five_fold.py --smoke-test` and
prints: submit -> SUCCEEDED, seconds until the first and the second worker node joined, the peak node count, and the
share of the job's wall during which a trial was training. tests/e2e/test_autoscaling.py runs the same functions.
The cluster is nnunet_ray/distributed/fake_autoscaling.py's.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from nnunet_ray.distributed.fake_autoscaling import fake_autoscaling_head, run_smoke_job

FIVE_FOLD = Path(__file__).resolve().parents[1] / "jobs" / "five_fold.py"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, fake_autoscaling_head(Path(tmp) / "home") as head:
        result = run_smoke_job(head, Path(tmp), FIVE_FOLD)
        if result["submit"].returncode != 0:
            print(result["submit"].stdout[-4000:] + result["submit"].stderr[-2000:], file=sys.stderr)
            print("bench_autoscaling: error: the smoke job failed", file=sys.stderr)
            return 1
    print(f"five_fold.py --smoke-test on an autoscaling cluster that starts empty: submit -> SUCCEEDED "
          f"{result['seconds']:.1f} s; first worker node up {result['first_node_s']:.0f} s and second "
          f"{result['second_node_s']:.0f} s after the submit; peak {result['peak_nodes']} worker nodes; "
          f"training {result['training_share']:.0%} of the job's wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
