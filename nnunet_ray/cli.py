"""`nnunet-ray <command>`: one subcommand per pipeline stage, flags generated from the typed configs.

    nnunet-ray synth --out data/Task99_Synth
    nnunet-ray download --task 04 --out data
    nnunet-ray plan --data data/Task99_Synth --dim 3 --print
    nnunet-ray preprocess --data data/Task99_Synth --results pre --dim 3
    nnunet-ray train --data pre/Task99_Synth/3d --results results --fold 0 --workers 2

Every flag is the kebab-case name of a config field (``--learning-rate``); the reference's snake_case spelling
(``--learning_rate``) is accepted as an alias. A bad option exits with status 2 and one line naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable

from nnunet_ray.config import (ConfigError, DownloadConfig, PlanConfig, PreprocessConfig, RunError, SynthConfig,
                               TrainConfig, flag_name)
from nnunet_ray.data.types import CaseError, DatasetError

_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
    names = [f.metadata.get("cli", flag_name(f.name))]
    if "_" in f.name:
        names.append("--" + f.name)  # the reference's snake_case spelling
    help_text = f.metadata.get("help", "")
    if f.type == "bool":
        parser.add_argument(*names, dest=f.name, action="store_true", help=help_text)
    elif f.type.startswith("tuple"):
        parser.add_argument(*names, dest=f.name, type=int, nargs="+", default=list(f.default),
                            help=help_text)
    else:
        parser.add_argument(*names, dest=f.name, type=_TYPES[f.type], default=f.default,
                            choices=f.metadata.get("choices"), help=help_text)


def _config_from(cls: type, args: argparse.Namespace) -> Any:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values).validate()


def cmd_synth(cfg: SynthConfig) -> int:
    from nnunet_ray.data.synth import make_synthetic_task
    print(make_synthetic_task(cfg))
    return 0


def cmd_download(cfg: DownloadConfig) -> int:
    from nnunet_ray.data.download import DownloadError, download_task
    try:
        for task in cfg.task:
            print(download_task(task, cfg.out, mirror=cfg.mirror, keep_archive=cfg.keep_archive,
                                progress=lambda line: print(line, flush=True)))
    except DownloadError as err:
        raise RunError(str(err)) from err
    return 0


def cmd_plan(cfg: PlanConfig) -> int:
    from nnunet_ray.distributed.preprocess import plan_dataset
    plans = plan_dataset(cfg)
    if cfg.print_plans:
        print(json.dumps(plans, indent=2))
    else:
        print(f"patch {plans['patch_size']}, spacing {plans['spacing']}, strides {plans['strides']}, "
              f"preset {plans['preset']}")
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


COMMANDS: dict[str, tuple[type, Callable[[Any], int], str]] = {
    "synth": (SynthConfig, cmd_synth, "write a synthetic MSD-format task (the demo and test data)"),
    "download": (DownloadConfig, cmd_download, "fetch MSD tasks from their public mirror (resumable, verified)"),
    "plan": (PlanConfig, cmd_plan, "fingerprint a dataset and write plans.json"),
    "preprocess": (PreprocessConfig, cmd_preprocess, "crop, resample and normalise every case on Ray Data"),
    "train": (TrainConfig, cmd_train, "train one fold with Ray Train (DDP, AMP, checkpoints)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-ray", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        for f in dataclasses.fields(cls):
            _add_field(cmd, f)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nnunet-ray` console command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cls, run, _ = COMMANDS[args.command]
    try:
        return run(_config_from(cls, args))
    except (ConfigError, DatasetError, CaseError) as err:
        print(f"nnunet-ray {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"nnunet-ray {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
