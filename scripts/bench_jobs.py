"""Benchmark: the five-fold smoke job through the real job API, results on a local path vs on object storage.

    python scripts/bench_jobs.py           # needs the test extras: moto[server] is the S3 stand-in

Starts a throwaway cluster (`ray start --head`, 2 CPUs, dashboard and job server on free ports), then submits
`jobs/five_fold.py --smoke-test` with `ray job submit` twice: `--results` on a local folder, then on an `s3://`
bucket of a local S3-compatible server (moto). Prints the time from submit to SUCCEEDED of each and their ratio:
the overhead of object storage for the same job (same cluster, same synthetic task, same 1-epoch budget).
The e2e tests (tests/e2e/test_jobs.py) start their cluster and submit their jobs with the same functions
(nnunet_ray/distributed/local_clusters.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from nnunet_ray.distributed.local_clusters import local_head, submit_job, training_seconds

FIVE_FOLD = Path(__file__).resolve().parents[1] / "jobs" / "five_fold.py"


@contextlib.contextmanager
def moto_bucket() -> Iterator[str]:
    """A local S3-compatible server (moto) with one empty bucket; yields an ``s3://`` root whose URI carries the
    endpoint and (dummy) credentials, so the job's processes need no environment of their own."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        fs, _ = pafs.FileSystem.from_uri(f"s3://test:test@{bucket}?{options}&allow_bucket_creation=true")
        fs.create_dir(bucket)
        yield f"s3://test:test@{bucket}/results?{options}"
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    with moto_bucket() as bucket, local_head() as (address, env), tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for label, results in (("local path", str(Path(tmp) / "results")), ("s3 (moto)", bucket)):
            submit, seconds[label] = submit_job(address, env, FIVE_FOLD, Path(tmp) / "job",
                                                ["--smoke-test", "--results", results])
            if submit.returncode != 0:
                print(submit.stdout[-4000:] + submit.stderr[-2000:], file=sys.stderr)
                print(f"bench_jobs: error: the {label} smoke job failed", file=sys.stderr)
                return 1
            print(f"five_fold.py --smoke-test, results on {label}: submit -> SUCCEEDED {seconds[label]:.1f} s",
                  flush=True)
            if label == "local path":
                training = training_seconds(Path(results))
                print(f"  of which training (any trial's workers in fit): {training:.1f} s; outside training "
                      f"(start-up, scheduling, preprocessing, evaluation, prediction): "
                      f"{1 - training / seconds[label]:.0%}", flush=True)
    print(f"object storage overhead: {seconds['s3 (moto)'] - seconds['local path']:+.1f} s "
          f"(x{seconds['s3 (moto)'] / seconds['local path']:.2f} the local path's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
