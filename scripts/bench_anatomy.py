"""Real-anatomy benchmark: test Dice at an equal wall budget, nnunet_ray's training recipes next to nnU-Net v2.

    python scripts/bench_anatomy.py --budget 28m --work /tmp/anatomy                    # every row (hours)
    python scripts/bench_anatomy.py --budget 60s --work /tmp/anatomy_smoke --rows dle nnU-Net-v2 \\
        --v2-iterations 5                                                                   # smoke (~10 min)

Not run in CI (too long); the machine must otherwise be idle, rows run one after another. Steps:

1. ``scripts/anatomy_nnunetv2.py``'s environment ``.venv-nnunetv2`` is created when missing (nnU-Net v2 with CPU
   torch, and the trainer ``nnUNetTrainer_WallBudget``); ``scripts/anatomy_task.py`` builds the task (grey / white
   matter of the MNI ICBM152 template with random per-case variations) in MSD and nnU-Net v2 layouts, same files.
2. ``nnunet-ray preprocess`` once; its fold 0 (``splits.json``) becomes nnU-Net v2's ``splits_final.json``, so both
   tools train on the same 3D fold-0 cases.
3. each nnunet_ray row: ``nnunet-ray train --fold 0 --dim 3 --max-time BUDGET <row flags>`` (``--max-time`` also makes
   the poly / cosine horizon the epochs the budget holds), then ``nnunet-ray predict --tta`` of the test images.
   ``tune-winner``: ``nnunet-ray tune`` (default learning-rate sweep, ASHA, fold 0, ``--tune-budget`` wall) first,
   then a train run with its flags plus best_config.json's values as flags (``train`` has no ``--config``).
4. ``nnU-Net-v2``: ``nnUNetv2_plan_and_preprocess -c 3d_fullres``, ``nnUNetv2_train ... 0 -tr
   nnUNetTrainer_WallBudget -device cpu`` with the same budget, ``nnUNetv2_predict`` (mirroring TTA, its default).
5. every row's test predictions are scored against labelsTs with nnunet_ray's own Dice
   (``evaluation.metrics.case_dice``): mean over the test cases per class, then over GM and WM.

Rows (``--rows``; defaults are issue 18's): dle (``--recipe dle``, constant LR), dle-poly (``--recipe dle
--scheduler poly``), recipe-nnunetv2 (``--recipe nnunetv2``), tune-winner, nnU-Net-v2. ``--config "NAME: FLAGS"``
sets or adds an nnunet_ray row's flags (``--config "dle: --learning-rate 3e-4"``). nnU-Net v2 keeps its defaults:
250 iterations and 50 validation iterations per epoch, and on 2 CPU cores a 3D iteration here takes 15-20 s (smoke
run, busy machine), so one epoch takes over an hour and a 28 min budget ends after that first epoch, far past the
budget (the ``fit s`` column shows it); ``--recipe nnunetv2`` has the same 250-batch epoch. ``--v2-iterations N``
shortens v2's epochs (smoke runs; for a CPU comparison pair it with ``--config "recipe-nnunetv2: --recipe nnunetv2
--train-batches N"``). Prints one table (row, epochs, fit and train wall, predict wall, Dice GM / WM / mean) and
writes it with each step's seconds to ``WORK/bench_anatomy.json``; a row whose result (same budget and flags) is
in ``WORK/rows/`` is not run again unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from nnunet_ray.data.folds import SPLITS_FILE
from nnunet_ray.evaluation.metrics import case_dice
from nnunet_ray.runs.options_file import BEST_CONFIG_FILE, read_options_file
from nnunet_ray.runs.summary import load_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))  # anatomy_task.py, anatomy_nnunetv2.py beside this file
import anatomy_nnunetv2 as v2  # noqa: E402
from anatomy_task import LABELS, V2_ID, V2_NAME, build_task  # noqa: E402

CLI = str(Path(sys.executable).parent / "nnunet-ray")
PROJECT_ROWS = {"dle": "--recipe dle", "dle-poly": "--recipe dle --scheduler poly",
                "recipe-nnunetv2": "--recipe nnunetv2", "tune-winner": "--recipe dle"}
V2_ROW = "nnU-Net-v2"
DEFAULT_ROWS = [*PROJECT_ROWS, V2_ROW]


def parse_budget(text: str) -> int:
    """'28m', '60s', '1h', '90' (seconds) or 'HH:MM:SS' -> seconds."""
    if ":" in text:
        h, m, s = (int(p) for p in text.split(":"))
        return h * 3600 + m * 60 + s
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"budget {text!r}: use e.g. 60s, 28m, 1h or HH:MM:SS")
    return round(float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)])


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run(cmd: list[str], log_file: Path) -> float:
    """Run one step with its output in ``log_file``; returns wall seconds; a failure raises with the log's tail."""
    return v2.run_step(cmd, env=dict(os.environ), log_file=log_file)


def flags_from_config(best: dict) -> list[str]:
    """best_config.json's values as train flags: lists as several values, booleans as --x / --no-x."""
    flags = []
    for key, value in best.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            flags += [flag, *(str(v) for v in value)]
        else:
            flags += [flag, str(value)]
    return flags



def _label_map(path: Path) -> np.ndarray:
    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image), path  # .nii.gz label maps
    return np.asarray(image.dataobj).astype(np.int64)

def score_test_cases(preds: Path, labels: Path) -> dict:
    """nnunet_ray's Dice of every labelsTs case against its prediction: per case, per class mean, overall mean."""
    n_classes, names = len(LABELS), [LABELS[k] for k in sorted(LABELS) if k]
    per_case = {}
    for label_path in sorted(labels.glob("*.nii.gz")):
        case = label_path.name[: -len(".nii.gz")]
        pred_path = preds / label_path.name
        if not pred_path.is_file():
            raise RuntimeError(f"{pred_path}: no prediction for test case {case}")
        label, pred = _label_map(label_path), _label_map(pred_path)
        per_case[case] = case_dice(torch.from_numpy(pred), torch.from_numpy(label), n_classes).tolist()
    per_class = {name: float(np.mean([d[i] for d in per_case.values()])) for i, name in enumerate(names)}
    return {"per_case": per_case, "per_class": per_class, "mean": float(np.mean(list(per_class.values())))}


def preprocess(msd: Path, work: Path, steps: dict) -> Path:
    """``nnunet-ray preprocess`` (finished cases are skipped on a rerun); returns the 3D preprocessed folder."""
    steps["nnunet_ray_preprocess_s"] = run([CLI, "preprocess", "--data", str(msd), "--results", str(work / "pre"),
                                            "--dim", "3"], work / "logs" / "preprocess.log")
    return work / "pre" / msd.name / "3d"


def tune_flags(args, pre: Path, work: Path, base: list[str], steps: dict) -> list[str]:
    """Run the default sweep on fold 0 within ``--tune-budget``; the winner's values as train flags."""
    at_once = max(1, os.cpu_count() or 1)  # 1-CPU trials: as many at once as CPUs
    waves = -(-args.tune_samples // at_once)
    trial_time = hms(args.tune_budget / waves)  # each trial gets its share of the sweep's wall
    sweep = work / "tune"
    shutil.rmtree(sweep, ignore_errors=True)
    steps["tune_s"] = run([CLI, "tune", "--data", str(pre), "--results", str(sweep), "--name", "sweep", "--folds", "0",
                           "--num-samples", str(args.tune_samples), "--budget", hms(args.tune_budget),
                           "--max-time", trial_time, *base, *args.train_flags.split()],
                          work / "logs" / "tune.log")
    best = read_options_file(str(sweep / "sweep" / BEST_CONFIG_FILE))
    return flags_from_config(best)


def whole_machine(flags: list[str]) -> list[str]:
    """``--cpus-per-worker`` = every CPU unless a row sets it: the one training worker's torch threads then use the
    whole machine, as nnU-Net v2's CPU training does (``torch.set_num_threads(cpu_count)``); a 1-CPU worker (the
    default) would train with one thread. The sweep keeps 1-CPU trials, as many at once as CPUs."""
    return [] if "--cpus-per-worker" in flags else ["--cpus-per-worker", str(os.cpu_count() or 1)]


def project_row(name: str, flags: list[str], *, args, msd: Path, pre: Path, work: Path) -> dict:
    """Train fold 0 within the budget, predict the test images with TTA, score them."""
    steps: dict = {}
    if name == "tune-winner":
        flags = flags + tune_flags(args, pre, work, flags, steps)
    results, preds = work / "results", work / "preds" / name
    shutil.rmtree(results / name, ignore_errors=True)  # a half-finished run of an earlier attempt
    steps["train_s"] = run([CLI, "train", "--data", str(pre), "--results", str(results), "--experiment", name,
                            "--dim", "3", "--fold", "0", "--max-time", hms(args.budget), *whole_machine(flags),
                            *flags, *args.train_flags.split()], work / "logs" / f"{name}.train.log")
    summary = load_summary(results / name)
    steps["predict_s"] = run([CLI, "predict", "--models", str(results / name), "--input", str(msd), "--out",
                              str(preds), "--tta", "--overwrite"], work / "logs" / f"{name}.predict.log")
    return {"flags": " ".join(flags), "epochs": summary.epochs, "stop_reason": summary.stop_reason,
            "train_seconds_in_worker": summary.seconds_in_worker, "steps": steps,
            "dice": score_test_cases(preds, msd / "labelsTs")}


def v2_row(args, *, msd: Path, v2_raw: Path, pre: Path, work: Path) -> dict:
    """nnU-Net v2 on the same fold 0 and budget: plan + preprocess once, train, predict, score."""
    steps: dict = {}
    root = work / "nnunetv2"
    env = v2.v2_env(root, raw=v2_raw.parent, budget_s=args.budget, iterations=args.v2_iterations)
    if not (root / "nnUNet_preprocessed" / V2_NAME / "nnUNetPlans_3d_fullres").is_dir():
        steps["plan_preprocess_s"] = v2.plan_and_preprocess(
            args.venv, env, dataset_id=V2_ID, dataset_name=V2_NAME, splits=pre / SPLITS_FILE,
            log_file=work / "logs" / "nnunetv2.plan.log")
    shutil.rmtree(root / "nnUNet_results", ignore_errors=True)
    record = v2.train(args.venv, env, dataset_id=V2_ID, fold=0, log_file=work / "logs" / "nnunetv2.train.log")
    steps["train_s"] = record["wall_s"]
    preds = work / "preds" / V2_ROW
    steps["predict_s"] = v2.predict(args.venv, env, dataset_id=V2_ID, fold=0, images=v2_raw / "imagesTs",
                                    out=preds, log_file=work / "logs" / "nnunetv2.predict.log")
    return {"flags": f"nnUNetTrainer_WallBudget, {record['iterations_per_epoch']} iterations/epoch",
            "epochs": record["epochs"], "stop_reason": "max_time", "train_seconds_in_worker": record["train_seconds"],
            "steps": steps, "dice": score_test_cases(preds, msd / "labelsTs")}


def row_configs(args) -> dict[str, list[str]]:
    """Row name -> nnunet_ray train flags, from the defaults and every ``--config "NAME: FLAGS"``."""
    rows = {name: flags.split() for name, flags in PROJECT_ROWS.items()}
    for item in args.config:
        name, sep, flags = item.partition(":")
        if not sep or not name.strip() or name.strip() == V2_ROW:
            raise SystemExit(f"--config {item!r}: expected 'NAME: FLAGS' with NAME other than {V2_ROW}")
        rows[name.strip()] = flags.split()
    return rows


def run_rows(args, rows: dict[str, list[str]], *, msd: Path, v2_raw: Path, pre: Path, work: Path) -> dict:
    """Each requested row, or its cached result when the budget and flags match; returns name -> result."""
    out = {}
    for name in args.rows:
        cache = work / "rows" / f"{name}.json"
        key = {"budget_s": args.budget, "config": rows.get(name), "train_flags": args.train_flags,
               "v2_iterations": args.v2_iterations if name == V2_ROW else None,
               "tune": [args.tune_budget, args.tune_samples] if name == "tune-winner" else None}
        if cache.is_file() and not args.overwrite and json.loads(cache.read_text()).get("key") == key:
            print(f"[{name}] cached: {cache}", flush=True)
            out[name] = json.loads(cache.read_text())
            continue
        print(f"[{name}] training fold 0 for {hms(args.budget)} ...", flush=True)
        start = time.perf_counter()
        result = v2_row(args, msd=msd, v2_raw=v2_raw, pre=pre, work=work) if name == V2_ROW else \
            project_row(name, rows[name], args=args, msd=msd, pre=pre, work=work)
        result.update(key=key, row_wall_s=time.perf_counter() - start)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(result, indent=2))
        print(f"[{name}] done in {result['row_wall_s']:.0f} s: mean Dice {result['dice']['mean']:.4f}", flush=True)
        out[name] = result
    return out


def format_table(results: dict) -> str:
    """One line per row. fit s: training inside the trainer (what the budget bounds; the epoch running when it
    ends is finished); train s: the whole train command (process and Ray start-up, checkpoint writing)."""
    head = (f"{'row':<16} {'epochs':>6} {'fit s':>6} {'train s':>8} {'predict s':>9} {'GM':>7} {'WM':>7} {'mean':>7}"
            "  flags")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        gm, wm = (r["dice"]["per_class"][LABELS[k]] for k in (1, 2))
        lines.append(f"{name:<16} {r['epochs']:>6} {r['train_seconds_in_worker']:>6.0f} {r['steps']['train_s']:>8.0f} "
                     f"{r['steps']['predict_s']:>9.0f} {gm:>7.4f} {wm:>7.4f} {r['dice']['mean']:>7.4f}  {r['flags']}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=parse_budget, default=parse_budget("28m"),
                        help="training wall budget per row (fold 0): 60s, 28m, 1h or HH:MM:SS")
    parser.add_argument("--work", default="/tmp/anatomy", help="task, runs, predictions, logs and the result JSON")
    parser.add_argument("--rows", nargs="+", default=None, help=f"rows to run, in order (default: {DEFAULT_ROWS})")
    parser.add_argument("--config", action="append", default=[], help="'NAME: FLAGS': set or add an nnunet_ray row")
    parser.add_argument("--train-flags", default="", help="flags added to every nnunet_ray train / tune run")
    parser.add_argument("--tune-budget", type=parse_budget, default=None, help="tune-winner's sweep wall (default "
                        "--budget)")
    parser.add_argument("--tune-samples", type=int, default=4, help="tune-winner's configurations")
    parser.add_argument("--v2-iterations", type=int, default=None, help="smoke runs only: nnU-Net v2 iterations "
                        "per epoch (default: v2's 250)")
    parser.add_argument("--venv", type=Path, default=v2.DEFAULT_VENV, help="nnU-Net v2's environment")
    parser.add_argument("--cases", type=int, default=10, help="training cases of the task")
    parser.add_argument("--test", type=int, default=2, help="test cases of the task")
    parser.add_argument("--seed", type=int, default=0, help="the task's variation seed")
    parser.add_argument("--overwrite", action="store_true", help="rerun rows whose result is in WORK/rows")
    args = parser.parse_args()
    args.tune_budget = args.tune_budget or args.budget
    return args


def main() -> int:
    args = parse_args()
    rows = row_configs(args)
    args.rows = args.rows or [*rows, V2_ROW]  # without --config: DEFAULT_ROWS
    unknown = [r for r in args.rows if r != V2_ROW and r not in rows]
    if unknown:
        raise SystemExit(f"--rows: unknown {unknown}; known: {[*rows, V2_ROW]} (add one with --config)")
    work = Path(args.work).resolve()
    steps: dict = {}
    if V2_ROW in args.rows:
        steps["nnunetv2_setup_s"] = v2.setup_venv(args.venv.resolve())
        args.venv = args.venv.resolve()
    start = time.perf_counter()
    msd, v2_raw = build_task(work / "task", cases=args.cases, test=args.test, seed=args.seed)
    steps["task_s"] = time.perf_counter() - start
    pre = preprocess(msd, work, steps)
    print(f"setup {steps}", flush=True)
    results = run_rows(args, rows, msd=msd, v2_raw=v2_raw, pre=pre, work=work)
    table = format_table(results)
    print(f"\nfold 0, 3D, {hms(args.budget)} training wall per row, test Dice with TTA "
          f"({args.test} cases, {os.cpu_count()} CPUs)\n{table}")
    report = {"budget_s": args.budget, "cases": args.cases, "test": args.test, "seed": args.seed,
              "cpus": os.cpu_count(), "setup_steps": steps, "rows": results, "table": table}
    (work / "bench_anatomy.json").write_text(json.dumps(report, indent=2))
    print(f"written: {work / 'bench_anatomy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
