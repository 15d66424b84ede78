"""`nnunet-ray <command>`: one subcommand per pipeline stage, flags generated from the typed configs.

    nnunet-ray synth --out data/Task99_Synth
    nnunet-ray download --task 04 --out data
    nnunet-ray plan --data data/Task99_Synth --dim 3 --print
    nnunet-ray preprocess --data data/Task99_Synth --results pre --dim 3
    nnunet-ray train --data pre/Task99_Synth/3d --results results --fold 0 --workers 2
    nnunet-ray cv --data data/Task99_Synth --results results --dims 3 --folds 0-4 --name five_fold
    nnunet-ray tune --data pre/Task99_Synth/3d --results results --learning-rate loguniform:1e-4:1e-2 \
        --patch-size 64,64,64 96,96,96 --num-samples 8
    nnunet-ray predict --models results --input data/Task99_Synth --out preds --tta
    nnunet-ray evaluate --preds preds --labels data/Task99_Synth/labelsTs
    nnunet-ray evaluate --cv results --data data/Task99_Synth

Every flag is the kebab-case name of a config field (``--learning-rate``); the reference's snake_case spelling
(``--learning_rate``) is accepted as an alias, as are a few of its names where ours differ (``--num_workers`` is
``--dali-threads`` in train and ``--case-workers`` in preprocess). Each bool has ``--x`` and ``--no-x``. A bad
option exits with status 2 and one line naming the flag. ``config/flags.py`` generates the flags and records which
were given, so that ``--recipe`` supplies only the training options the user left out (``config.recipes``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

from nnunet_ray.config import (
    ConfigError,
    CVConfig,
    DownloadConfig,
    EvaluateConfig,
    PlanConfig,
    PredictConfig,
    PreprocessConfig,
    RunError,
    Stopped,
    SynthConfig,
    TrainConfig,
    TuneConfig,
)
from nnunet_ray.config.flags import add_config_flags, config_from_args
from nnunet_ray.data import storage
from nnunet_ray.data.credentials import into_environment
from nnunet_ray.data.records import RecordError
from nnunet_ray.data.types import CaseError, DatasetError
from nnunet_ray.planning.schema import PlansError
from nnunet_ray.runs.run_config import CheckpointError


class CommandLogHandler(logging.Handler):
    """Writes the package's records to the current ``sys.stderr``: progress as is, warnings and errors prefixed
    ``warning:`` / ``error:`` like the commands' own messages."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Show the package's log records (progress, warnings, errors) on stderr; library users and Tune trials that
    skip this see only warnings (Python's last-resort handler). Calling it again keeps a single handler."""
    package = logging.getLogger("nnunet_ray")
    if not any(isinstance(h, CommandLogHandler) for h in package.handlers):
        package.addHandler(CommandLogHandler())
    package.setLevel(level)


def _config_from(cls: type, args: argparse.Namespace) -> Any:
    # A URI's KEY:SECRET@ goes to the environment here, before anything can store or print it.
    return into_environment(config_from_args(cls, args)).validate()


def cmd_synth(cfg: SynthConfig) -> int:
    from nnunet_ray.data.synth import make_synthetic_task
    print(make_synthetic_task(cfg))
    return 0


def cmd_download(cfg: DownloadConfig) -> int:
    from nnunet_ray.data.download import DownloadError, download_task
    storage.check_writable_here(cfg.out, "out")
    try:
        for task in cfg.task:
            print(download_task(task, cfg.out, mirror=cfg.mirror, keep_archive=cfg.keep_archive,
                                progress=lambda line: print(line, flush=True)))
    except DownloadError as err:
        raise RunError(str(err)) from err
    return 0


def cmd_plan(cfg: PlanConfig) -> int:
    from nnunet_ray.distributed.preprocess import plan_dataset
    from nnunet_ray.planning.presets import match_preset
    plans = plan_dataset(cfg)
    if cfg.print_plans:
        print(json.dumps(plans.to_json(), indent=2))
    else:
        _, reason = match_preset(plans.dataset, plans.in_channels, plans.n_classes)  # the plans know the dataset
        print(f"patch {list(plans.patch_size)}, spacing {list(plans.spacing)}, "
              f"strides {[list(s) for s in plans.strides]}, preset {plans.preset} ({reason})")
    return 0


def cmd_preprocess(cfg: PreprocessConfig) -> int:
    from nnunet_ray.distributed.preprocess import preprocess_dataset, summary_json
    summary = preprocess_dataset(cfg)
    print(summary.line())
    print(summary_json(summary))
    return 0 if summary.ok else 1


def cmd_train(cfg: TrainConfig) -> int:
    from nnunet_ray.distributed.train import train_fold
    print(json.dumps(train_fold(cfg), indent=2, default=str))
    return 0


def cmd_cv(cfg: CVConfig) -> int:
    from nnunet_ray.distributed.cv import format_table, run_cv
    table = run_cv(cfg)
    print(format_table(table))
    return 0


def cmd_tune(cfg: TuneConfig) -> int:
    from nnunet_ray.distributed.sweep import format_outcome, run_sweep
    print(format_outcome(run_sweep(cfg)))
    return 0


def cmd_predict(cfg: PredictConfig) -> int:
    from nnunet_ray.distributed.predict import predict_folder
    summary = predict_folder(cfg)
    print(summary.line())
    return 0 if summary.ok else 1


def cmd_evaluate(cfg: EvaluateConfig) -> int:
    if cfg.cv:  # its predictions and scores go into the experiment folder
        storage.check_writable_here(cfg.cv, "cv")
        from nnunet_ray.distributed.cv_eval import evaluate_cv
        from nnunet_ray.evaluation.cv_summary import cv_table
        print(cv_table(evaluate_cv(cfg)))
        return 0
    storage.check_writable_here(cfg.out or cfg.preds, "out")
    from nnunet_ray.evaluation.report import evaluate_folders, summary_table
    summary = evaluate_folders(cfg.preds, cfg.labels, tolerance=cfg.nsd_tolerance, out=cfg.out,
                               allow_missing=cfg.allow_missing, progress=print)
    print(summary_table(summary))
    print(f"summary.json and summary.csv are in {storage.display(cfg.out or cfg.preds)}")
    return 0


COMMANDS: dict[str, tuple[type, Callable[[Any], int], str]] = {
    "synth": (SynthConfig, cmd_synth, "write a synthetic MSD-format task (the demo and test data)"),
    "download": (DownloadConfig, cmd_download, "fetch MSD tasks from their public mirror (resumable, verified)"),
    "plan": (PlanConfig, cmd_plan, "fingerprint a dataset and write plans.json"),
    "preprocess": (PreprocessConfig, cmd_preprocess, "crop, resample and normalise every case on Ray Data"),
    "train": (TrainConfig, cmd_train, "train one fold with Ray Train (DDP, AMP, checkpoints)"),
    "cv": (CVConfig, cmd_cv, "cross-validate: every fold x dim a Ray Tune trial, then a summary over folds"),
    "tune": (TuneConfig, cmd_tune, "sweep learning rate, patch size or any training option on Ray Tune (ASHA)"),
    "predict": (PredictConfig, cmd_predict, "ensemble prediction on a Ray actor pool, NIfTI in the input geometry"),
    "evaluate": (EvaluateConfig, cmd_evaluate, "Dice, HD95 and normalised surface Dice against reference labels"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-ray", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_text) in COMMANDS.items():
        # allow_abbrev off: with --x / --no-x pairs and aliases, a prefix could silently pick another flag.
        cmd = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_config_flags(cmd, cls)
    return parser


STOPPED_EXIT = 130  # the shell's code for a command ended by Ctrl-C
RESUME_FLAGS = {"train": "add --resume-training", "cv": "add --resume if its trials had started",
                "tune": "add --resume if its trials had started"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nnunet-ray` console command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    cls, run, _ = COMMANDS[args.command]
    try:
        return run(_config_from(cls, args))
    except Stopped as err:
        print(f"nnunet-ray {args.command}: {err}", file=sys.stderr)
        return STOPPED_EXIT
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM once Ray is up (cluster.init_ray)
        print(f"nnunet-ray {args.command}: stopped; finished work is kept: rerun the command to continue "
              f"({RESUME_FLAGS.get(args.command, 'the same flags')})", file=sys.stderr)
        return STOPPED_EXIT
    except (ConfigError, DatasetError, CaseError, PlansError, RecordError, CheckpointError) as err:
        print(f"nnunet-ray {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (RunError, storage.StorageError) as err:  # a StorageError names the object that could not be written
        print(f"nnunet-ray {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
