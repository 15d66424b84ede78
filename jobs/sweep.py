"""Sweep job: a learning-rate x patch-size search on Ray Tune (ASHA), then optionally a cross-validation of the best.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 -- python jobs/sweep.py \
        --data /shared/Task04_Hippocampus --results /shared/results \
        --learning-rate loguniform:1e-4:1e-2 --patch-size 32,48,32 40,56,40 --num-samples 8 --then-cv

Options this script does not know (--learning-rate, --patch-size, --search-space, --search, --num-samples,
--scheduler, --budget, --recipe, any training option) go to `nnunet-ray tune`; with no search option it sweeps the
learning rate. With --then-cv the sweep's best_config.json (which names a --recipe other than dle) trains every fold
(`cv --config`).
Needs nothing but the installed `nnunet_ray` package.
"""

from __future__ import annotations

import argparse
import sys

from nnunet_ray.data import storage
from nnunet_ray.jobs import SMOKE_TRAINING, JobError, run_step, synthetic_dataset
from nnunet_ray.runs.names import experiment_name
from nnunet_ray.runs.options_file import BEST_CONFIG_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="", help="raw dataset folder, or a preprocessed PRE/<dataset>/<dim>d: a "
                        "path every node sees or an s3:// / gs:// URI")
    parser.add_argument("--results", required=True,
                        help="results root: a shared filesystem path or an s3:// / gs:// URI")
    parser.add_argument("--name", default="", help="sweep name (default <dataset>_sweep)")
    parser.add_argument("--then-cv", action="store_true", help="cross-validate the best configuration")
    parser.add_argument("--cv-folds", default="", help="with --then-cv: folds to train (default 0-4; the smoke "
                        "test trains 0,1); --folds goes to the sweep")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a tiny budget; without --data, a synthetic task under --results")
    args, tune_options = parser.parse_known_args(argv)
    results = storage.absolute(args.results)
    try:
        # A URI goes to every step as given (resolving it as a path would mangle it into a local folder name).
        data = storage.absolute(args.data) if args.data else str(synthetic_dataset(results, smoke=args.smoke_test))
        name = args.name or experiment_name(storage.basename(data), "sweep")
        sweep, best = storage.join(results, name), storage.join(results, name, BEST_CONFIG_FILE)
        budget = SMOKE_TRAINING if args.smoke_test else []
        run_step("tune", ["tune", "--data", data, "--results", results, "--name", name, *budget, *tune_options])
        print(f"sweep results: {storage.display(storage.join(sweep, 'tune_results.csv'))}; "
              f"best configuration: {storage.display(best)}")
        if args.then_cv:
            cv_name = experiment_name(name, "best_cv")
            folds = args.cv_folds or ("0,1" if args.smoke_test else "0-4")
            run_step("cv", ["cv", "--data", data, "--results", results, "--name", cv_name, "--config", best,
                            "--folds", folds, *budget])
            print("cross-validation of the best configuration: "
                  f"{storage.display(storage.join(results, cv_name, 'cv_summary.csv'))}")
    except JobError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 1
    print(f"compare trials: tensorboard --logdir {storage.display(sweep)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
