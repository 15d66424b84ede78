"""What the `jobs/` entry points share: run one `nnunet-ray` command as a job step, and the smoke-test dataset.

The job scripts are copied alone to a head node (`ray submit cluster.yaml jobs/five_fold.py`) or uploaded by
`ray job submit`, so everything they need beyond argument parsing lives here, in the installed package.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from nnunet_ray.cli import main as nnunet_ray
from nnunet_ray.config import SynthConfig
from nnunet_ray.data import storage
from nnunet_ray.data.dataset import DATASET_FILE

# A training budget that exercises every stage in seconds per trial (the smoke test's correctness, not its Dice).
SMOKE_TRAINING = ["--min-epochs", "1", "--max-epochs", "1", "--train-batches", "2", "--val-cases", "1"]


class JobError(RuntimeError):
    """A job step failed; the message names the step and its exit status."""


def run_step(title: str, argv: list[str]) -> None:
    """Run ``nnunet-ray ARGV`` in this process and print one line when it ends.

    Raises:
        JobError: the command exited non-zero (its own one-line error is already on stderr).
    """
    shown = " ".join(storage.display(arg) for arg in argv)  # no credentials or endpoint options in job logs
    print(f"== {title}: nnunet-ray {shown}", flush=True)
    start = time.perf_counter()
    status = nnunet_ray(argv)
    seconds = time.perf_counter() - start
    if status != 0:
        raise JobError(f"step '{title}' failed with exit status {status} after {seconds:.0f} s")
    print(f"== {title}: done in {seconds:.0f} s", flush=True)


def has_test_cases(data: str) -> bool:
    """Whether the raw dataset at ``data`` (a path or URI) lists test images to predict (MSD ``test``, v2
    ``imagesTs``); a URI's dataset is the copy ``cv`` already staged on this node."""
    from nnunet_ray.data.staging import open_raw_dataset
    dataset, _ = open_raw_dataset(data)
    return bool(dataset.test)


def synthetic_dataset(results: str, *, smoke: bool) -> Path:
    """The built-in synthetic task for ``--smoke-test``, written once (reruns reuse it): under ``results`` when
    that is a path; in this machine's temporary folder when it is a URI (the job's raw images are read locally,
    the same seed makes the same task on a rerun).

    Raises:
        JobError: no ``--data`` was given outside a smoke test.
    """
    if not smoke:
        raise JobError("--data is required (a raw dataset folder), unless --smoke-test")
    key = hashlib.sha1(storage.display(results).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir(), f"nnunet_ray_smoke_{key}") if storage.is_uri(results) else Path(results)
    raw = root / "raw" / "Task99_Synthetic"
    if not (raw / DATASET_FILE).exists():
        from nnunet_ray.data.synth import make_synthetic_task
        make_synthetic_task(SynthConfig(out=str(raw), cases=10, test=2, size=40, seed=0).validate())
    return raw
