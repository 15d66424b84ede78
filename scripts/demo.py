"""`make demo`: the main job end to end on the built-in synthetic dataset and a local Ray cluster.

    python scripts/demo.py --workdir demo_data

synth -> plan -> preprocess (Ray Data) -> train fold 0 (Ray Train, 2 CPU workers with DDP, or the cluster's GPUs).
Reruns reuse finished work: preprocessing skips finished cases and training continues the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_ray.cli import configure_logging
from nnunet_ray.config import PreprocessConfig, SynthConfig, TrainConfig
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.cluster import cluster_gpus
from nnunet_ray.distributed.preprocess import preprocess_dataset
from nnunet_ray.distributed.train import train_fold


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="demo_data", help="where the raw, preprocessed and results folders go")
    parser.add_argument("--cases", type=int, default=10, help="synthetic training cases")
    parser.add_argument("--dim", type=int, default=3, choices=(2, 3))
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of fold 0")
    args = parser.parse_args()
    configure_logging()  # preprocessing progress and warnings on stderr
    work = Path(args.workdir).resolve()
    raw = work / "raw" / "Task99_Synthetic"
    if not (raw / "dataset.json").exists():
        print(f"[1/3] writing a synthetic task to {raw}", flush=True)
        make_synthetic_task(SynthConfig(out=str(raw), cases=args.cases, test=2, seed=0).validate())
    else:
        print(f"[1/3] reusing the synthetic task in {raw}", flush=True)
    print("[2/3] planning + preprocessing on a local Ray cluster (Ray Data)", flush=True)
    summary = preprocess_dataset(PreprocessConfig(data=str(raw), results=str(work / "preprocessed"), dim=args.dim))
    print(summary.line())
    print(f"preprocessed arrays, plans.json and splits.json are in {summary.out_dir}")
    if not summary.ok:
        return 1
    gpus = min(cluster_gpus(), 8)
    print(f"[3/3] training fold 0 for {args.epochs} epochs on Ray Train "
          f"({f'{gpus} GPU workers, AMP' if gpus else '2 CPU workers, DDP over gloo'})", flush=True)
    run = train_fold(TrainConfig(
        data=str(summary.out_dir), results=str(work / "results"), dim=args.dim, fold=0, gpus=gpus, workers=2,
        amp=gpus > 0, min_epochs=args.epochs, max_epochs=args.epochs, learning_rate=3e-3,
        resume_training=True, image_every=5).validate())
    print(f"fold 0: best mean Dice {run['best_dice']:.3f} at epoch {run['best_epoch']} after {run['epochs']} epochs "
          f"({run['seconds']:.0f} s)")
    print(f"checkpoints: {run['best_checkpoint']} (best), {run['last_checkpoint']} (last)")
    print(f"compare runs: tensorboard --logdir {work / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
