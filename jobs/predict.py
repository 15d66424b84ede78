"""Prediction job: ensemble prediction of a folder of images with the models of an experiment, on a Ray actor pool.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 -- python jobs/predict.py \
        --models /shared/results/Task04_Hippocampus_five_fold --input /shared/new_scans --out /shared/predictions --tta

Every option goes to `nnunet-ray predict` (see `nnunet-ray predict --help`); with --labels the predictions are then
scored (`nnunet-ray evaluate`). Needs nothing but the installed `nnunet_ray` package.
"""

from __future__ import annotations

import argparse
import sys

from nnunet_ray.data import storage
from nnunet_ray.jobs import JobError, run_step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True,
                        help="prediction folder (<case>.nii.gz, predict.json): a path or an s3:// / gs:// URI")
    parser.add_argument("--labels", default="", help="reference labels to score the predictions against")
    args, predict_options = parser.parse_known_args(argv)
    try:
        run_step("predict", ["predict", "--out", args.out, *predict_options])
        if args.labels:
            run_step("evaluate", ["evaluate", "--preds", args.out, "--labels", args.labels])
    except JobError as err:
        print(f"predict: error: {err}", file=sys.stderr)
        return 1
    print(f"predictions: {storage.display(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
