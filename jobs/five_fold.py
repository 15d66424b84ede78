"""Five-fold job: one command from a raw dataset to a cross-validated, evaluated ensemble with test predictions.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 -- \
        python jobs/five_fold.py --data /shared/Task04_Hippocampus --results /shared/results
    python jobs/five_fold.py --smoke-test --results /tmp/smoke        # a synthetic task, a tiny budget
    python jobs/five_fold.py --data /shared/Task04_Hippocampus --results s3://bucket/results   # outputs in a bucket
    python jobs/five_fold.py --data s3://bucket/raw/Task04_Hippocampus --results s3://bucket/results   # all in one

Steps, each an `nnunet-ray` command on the cluster the job runs on (`RAY_ADDRESS` under `ray job submit`):
  1. cv        plan + preprocess (Ray Data), then every fold x dim a Ray Tune trial (Ray Train DDP + AMP)
  2. evaluate  --cv: each fold's validation cases predicted from the raw images with its best checkpoint and scored
               in the original space (Dice, HD95, NSD); writes best_configuration.json (2D / 3D / 2D+3D ensemble)
  3. predict   the dataset's test images (imagesTs) with the ensemble of every fold (Ray actor pool), as NIfTI;
               skipped, with a line saying so, when the dataset has none
  4. evaluate  the test predictions, when the dataset has test labels (labelsTs)
Options this script does not know (any training option such as --max-epochs, --amp, --gpus-per-trial) go to `cv`.
A rerun with --resume continues the experiment: finished trials, cases and predictions are kept.
Needs nothing but the installed `nnunet_ray` package (the launcher's `ray submit` copies only this file).
"""

from __future__ import annotations

import argparse
import sys

from nnunet_ray.data import storage
from nnunet_ray.jobs import SMOKE_TRAINING, JobError, has_test_cases, run_step, synthetic_dataset
from nnunet_ray.runs.names import experiment_name


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="", help="raw dataset folder (MSD or nnU-Net v2 layout): a path every node "
                        "sees or an s3:// / gs:// URI")
    parser.add_argument("--results", required=True,
                        help="results root: a shared filesystem path or an s3:// / gs:// URI")
    parser.add_argument("--name", default="", help="experiment name (default <dataset>_five_fold)")
    parser.add_argument("--dims", default="3", help="dims to cross-validate: 3, 2 or 2,3")
    parser.add_argument("--folds", default="", help="folds to train (default 0-4; the smoke test trains 0,1)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation when predicting")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted job of the same --name")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a tiny budget (1 epoch, 2 folds); without --data, a synthetic task under --results")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, cv_options = parse_args(argv)
    results = storage.absolute(args.results)
    try:
        # A URI goes to every step as given (resolving it as a path would mangle it into a local folder name).
        data = storage.absolute(args.data) if args.data else str(synthetic_dataset(results, smoke=args.smoke_test))
        name = args.name or experiment_name(storage.basename(data), "five_fold")
        experiment = storage.join(results, name)
        folds = args.folds or ("0,1" if args.smoke_test else "0-4")
        budget = SMOKE_TRAINING if args.smoke_test else []
        run_step("cv", ["cv", "--data", data, "--results", results, "--name", name,
                        "--dims", args.dims, "--folds", folds, *(["--resume"] if args.resume else []),
                        *budget, *cv_options])
        run_step("evaluate --cv", ["evaluate", "--cv", experiment, "--data", data])
        predictions = predict_test_cases(experiment, data, tta=args.tta)
    except JobError as err:
        print(f"five_fold: error: {err}", file=sys.stderr)
        return 1
    print(f"cross-validation summary: {storage.display(storage.join(experiment, 'cv_summary.csv'))}")
    print(f"original-space evaluation: {storage.display(storage.join(experiment, 'cv_original_space.csv'))}")
    if predictions:
        print(f"test predictions: {storage.display(predictions)}")
    print(f"compare folds: tensorboard --logdir {storage.display(experiment)}")
    return 0


def predict_test_cases(experiment: str, data: str, *, tta: bool) -> str | None:
    """Steps 3 and 4: the test images predicted by the ensemble (and scored when labelsTs exists); returns where
    the predictions are, or None when the dataset has no test images."""
    if not has_test_cases(data):
        print("== predict: skipped: the dataset lists no test images (imagesTs / dataset.json's test)", flush=True)
        return None
    predictions = storage.join(experiment, "test_predictions")
    run_step("predict", ["predict", "--models", experiment, "--input", data, "--out", predictions,
                         *(["--tta"] if tta else [])])
    if storage.is_dir(storage.join(data, "labelsTs")):
        run_step("evaluate", ["evaluate", "--preds", predictions, "--labels", storage.join(data, "labelsTs")])
    return predictions


if __name__ == "__main__":
    sys.exit(main())
