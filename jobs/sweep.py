"""Sweep job: a learning-rate x patch-size search on Ray Tune (ASHA), then optionally a cross-validation of the best.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 -- python jobs/sweep.py \
        --data /shared/Task04_Hippocampus --results /shared/results \
        --learning-rate loguniform:1e-4:1e-2 --patch-size 32,48,32 40,56,40 --num-samples 8 --then-cv

Options this script does not know (--learning-rate, --patch-size, --search-space, --search, --num-samples,
--scheduler, any training option) go to `nnunet-ray tune`. With --then-cv the sweep's best_config.json trains every
fold (`cv --config`).
Needs nothing but the installed `nnunet_ray` package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_ray.jobs import SMOKE_TRAINING, JobError, run_step, synthetic_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="", help="raw dataset folder, or a preprocessed PRE/<dataset>/<dim>d")
    parser.add_argument("--results", required=True, help="results root (a shared filesystem path on a cluster)")
    parser.add_argument("--name", default="", help="sweep name (default <dataset>_sweep)")
    parser.add_argument("--then-cv", action="store_true", help="cross-validate the best configuration (folds 0-4)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a tiny budget; without --data, a synthetic task under --results")
    args, tune_options = parser.parse_known_args(argv)
    results = Path(args.results).resolve()
    try:
        data = Path(args.data).resolve() if args.data else synthetic_dataset(results, smoke=args.smoke_test)
        sweep = results / (args.name or f"{data.name}_sweep")
        budget = SMOKE_TRAINING if args.smoke_test else []
        run_step("tune", ["tune", "--data", str(data), "--results", str(results), "--name", sweep.name,
                          *budget, *tune_options])
        print(f"sweep results: {sweep / 'tune_results.csv'}; best configuration: {sweep / 'best_config.json'}")
        if args.then_cv:
            cv_name = f"{sweep.name}_best_cv"
            run_step("cv", ["cv", "--data", str(data), "--results", str(results), "--name", cv_name,
                            "--config", str(sweep / "best_config.json"), *budget])
            print(f"cross-validation of the best configuration: {results / cv_name / 'cv_summary.csv'}")
    except JobError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 1
    print(f"compare trials: tensorboard --logdir {sweep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
