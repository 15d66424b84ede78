"""`make demo`: the five-fold job end to end on the built-in synthetic dataset and a local Ray cluster.

    python scripts/demo.py --workdir demo_data

synth -> `nnunet-ray cv`: plan + preprocess (Ray Data), then every fold a Ray Tune trial training on Ray Train
(1-CPU trials, as many at once as the CPUs allow; one GPU per trial when the cluster has GPUs), then the summary
table over the folds and the TensorBoard command. Reruns reuse finished work: preprocessing skips finished cases
and the experiment resumes (finished folds are not trained again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_ray.cli import configure_logging
from nnunet_ray.config import CVConfig, SynthConfig, TrainConfig
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.cluster import cluster_gpus, init_ray
from nnunet_ray.distributed.cv import format_table, run_cv

NAME = "five_fold"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="demo_data", help="where the raw, preprocessed and results folders go")
    parser.add_argument("--cases", type=int, default=10, help="synthetic training cases")
    parser.add_argument("--dims", default="3", help="dims to cross-validate: 3, 2 or 2,3")
    parser.add_argument("--folds", default="0-4", help="folds to train (the task has min(5, cases) folds)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per fold")
    parser.add_argument("--train-batches", type=int, default=4, help="training batches per epoch")
    args = parser.parse_args()
    configure_logging()  # preprocessing and experiment progress, warnings on stderr
    work = Path(args.workdir).resolve()
    raw = work / "raw" / "Task99_Synthetic"
    if not (raw / "dataset.json").exists():
        print(f"[1/2] writing a synthetic task to {raw}", flush=True)
        make_synthetic_task(SynthConfig(out=str(raw), cases=args.cases, test=2, seed=0).validate())
    else:
        print(f"[1/2] reusing the synthetic task in {raw}", flush=True)
    init_ray()
    gpus = 1 if cluster_gpus() else 0
    resume = (work / "results" / NAME / "tuner.pkl").is_file()
    print(f"[2/2] {'resuming' if resume else 'running'} a cross-validation of folds {args.folds} ({args.dims}d) on "
          f"Ray Tune + Ray Train, {'1 GPU (AMP)' if gpus else '1 CPU'} per trial", flush=True)
    table = run_cv(CVConfig(data=str(raw), results=str(work / "results"), preprocessed=str(work / "preprocessed"),
                    dims=args.dims, folds=args.folds, name=NAME, resume=resume, gpus_per_trial=gpus,
                    train=TrainConfig(min_epochs=args.epochs, max_epochs=args.epochs, learning_rate=3e-3,
                                      train_batches=args.train_batches, amp=gpus > 0, image_every=2)))
    print(format_table(table), flush=True)
    print(f"summary: {work / 'results' / NAME / 'cv_summary.csv'} (and .json)")
    print(f"compare folds: tensorboard --logdir {work / 'results' / NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
