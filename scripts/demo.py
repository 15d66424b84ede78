"""`make demo`: the five-fold job end to end on the built-in synthetic dataset and a local Ray cluster.

    python scripts/demo.py --workdir demo_data

synth -> `nnunet-ray cv`: plan + preprocess (Ray Data), then every fold a Ray Tune trial that trains the fold itself
(1-CPU trials, as many at once as the CPUs allow; one GPU per trial when the cluster has GPUs), then the summary
table over the folds -> ensemble prediction of the test images with every fold's best checkpoint of the CV
experiment (Ray actor pool) -> evaluation against the test labels (labelsTs) where the dataset has them.
Reruns reuse finished work: preprocessing skips finished cases, the experiment resumes (finished folds are not
trained again) and prediction skips finished cases.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_ray.cli import configure_logging
from nnunet_ray.config import CVConfig, PredictConfig, SynthConfig, TrainConfig
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.cluster import cluster_gpus, init_ray
from nnunet_ray.distributed.cv import format_table, run_cv
from nnunet_ray.distributed.predict import predict_folder
from nnunet_ray.evaluation.report import evaluate_folders, summary_table

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
        print(f"[1/4] writing a synthetic task to {raw}", flush=True)
        make_synthetic_task(SynthConfig(out=str(raw), cases=args.cases, test=2, seed=0).validate())
    else:
        print(f"[1/4] reusing the synthetic task in {raw}", flush=True)
    init_ray()
    gpus = 1 if cluster_gpus() else 0
    experiment = work / "results" / NAME
    resume = (experiment / "tuner.pkl").is_file()
    print(f"[2/4] {'resuming' if resume else 'running'} a cross-validation of folds {args.folds} ({args.dims}d) on "
          f"Ray Tune, {'1 GPU (AMP)' if gpus else '1 CPU'} per trial", flush=True)
    table = run_cv(CVConfig(data=str(raw), results=str(work / "results"), preprocessed=str(work / "preprocessed"),
                            dims=args.dims, folds=args.folds, name=NAME, resume=resume, gpus_per_trial=gpus,
                            train=TrainConfig(min_epochs=args.epochs, max_epochs=args.epochs, learning_rate=3e-3,
                                              train_batches=args.train_batches, amp=gpus > 0, image_every=2)))
    print(format_table(table), flush=True)
    print(f"summary: {experiment / 'cv_summary.csv'} (and .json)")
    print(f"compare folds: tensorboard --logdir {experiment}")
    return predict_and_evaluate(work, raw, experiment, gpus=gpus)


def predict_and_evaluate(work: Path, raw: Path, experiment: Path, *, gpus: int) -> int:
    """Ensemble prediction of the test images with every fold of the CV experiment, then evaluation where labels
    exist."""
    preds = work / "predictions"
    print(f"[3/4] ensemble prediction of {raw / 'imagesTs'} with every fold of {experiment.name} (Ray actor pool, "
          "flip TTA)", flush=True)
    summary = predict_folder(PredictConfig(models=(str(experiment),), input=str(raw), out=str(preds),
                                           tta=True, amp=gpus > 0).validate())  # one actor per GPU, else per CPU
    print(summary.line())
    if not summary.ok:
        return 1
    labels = raw / "labelsTs"
    if not labels.is_dir():
        print(f"[4/4] no {labels}: nothing to evaluate against")
        return 0
    print(f"[4/4] evaluating against {labels}", flush=True)
    report = evaluate_folders(preds, labels, progress=print)
    print(summary_table(report))
    print(f"summary.json and summary.csv are in {preds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
