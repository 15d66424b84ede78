"""Side-by-side benchmarks; each mode prints ratios measured in one run (machines here are shared and noisy).

    python scripts/benchmark.py --mode preprocess [--cases 12 --size 96 --rounds 1]
    python scripts/benchmark.py --mode loader
    python scripts/benchmark.py --mode step [--task 4 --dim 3 --batch-size 2]
    python scripts/benchmark.py --mode predict [--task 4 --batch-size 2 --volumes 4 --volume-size 64]
    python scripts/benchmark.py --mode cv [--cases 10 --batches 2]
    python scripts/benchmark.py --mode sweep [--cases 10 --batches 2 --epochs 4 --samples 4]

preprocess: the same synthetic set preprocessed with 1 worker and with every CPU of the local Ray cluster
(fresh output folders each time; planning is excluded from the timing); prints cases/s for both and the ratio.
loader: patches/s of the DALI train pipeline with every augmentation at the reference probabilities, for a 3D
4x128^3 patch (batch 2) and a 2D 4x192x160 batch of 16 slices (CPU mode here; GPU mode when CUDA is present).
step: one training step (forward, Dice+CE, backward, RAdam) of an MSD preset's U-Net, fp32 and AMP side by side.
cv: a 5-fold cross-validation (`nnunet-ray cv`, 1 epoch each) on the same Task04-preset data, three times on one
local cluster (its start-up timed apart): 1-worker folds trained inside their Tune trials (--engine tune), 1-worker
folds on Ray Train (--engine train), 2-worker folds on Ray Train. For each: wall time, the summed in-worker training
and validation, the overhead per trial, (wall - summed work / trials at once) x trials at once / trials, and each
trial's wall over its in-worker work.
sweep: the same seeded 4-configuration learning-rate sweep (`nnunet-ray tune`, fold 0, --epochs epochs) with ASHA
and with `--scheduler none`: wall time and epochs trained of each, the trials ASHA stopped, the wall time it saved.
predict: batched patch prediction of an MSD preset's U-Net (img/s, latency mean/p90/p95/p99; fp32 / AMP, without /
with flip TTA), per-volume time of a synthetic case (preprocess + sliding window + restore; without / with TTA), and
the ensemble throughput of two members over the same synthetic test volumes with 1 and with 2 Ray actors.
train: benchmark mode on Ray Train workers for a synthetic task planned with the Task04 (Hippocampus) preset:
img/s with 1 worker and with 2 (DDP), then the wall-clock overhead of a 1-epoch TorchTrainer run over the same
loop run in-process without Ray.
epoch: where an epoch's time goes on a small task (a synthetic 10-case task, fold 0: 8 training and 2 validation
cases, one process): mean seconds per epoch of training, validation and checkpointing, over --epochs epochs, with
the default --val-every / --checkpoint-every 1 and then with the values given here (default 5 / 5).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from nnunet_ray.config import PreprocessConfig, SynthConfig
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.planning.schema import load_plans
from nnunet_ray.runs.summary import run_summaries

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_predict.py beside this file
from bench_predict import bench_predict  # noqa: E402


def bench_preprocess(args: argparse.Namespace, work: Path) -> dict:
    from nnunet_ray.distributed.cluster import cluster_cpus, init_ray
    from nnunet_ray.distributed.preprocess import preprocess_dataset

    raw = work / "raw" / "Task98_Bench"
    make_synthetic_task(SynthConfig(out=str(raw), cases=args.cases, test=0, size=args.size,
                                    modalities=args.modalities, seed=1).validate())
    init_ray()
    all_cpus = cluster_cpus()
    times: dict[int, list[float]] = {1: [], all_cpus: []}
    for round_index in range(args.rounds):
        for workers in (1, all_cpus):
            cfg = PreprocessConfig(data=str(raw), results=str(work / f"pre_r{round_index}_w{workers}"),
                                   dim=args.dim, case_workers=workers)
            summary = preprocess_dataset(cfg)
            assert summary.ok and len(summary.done) == args.cases, summary.line()
            times[workers].append(summary.seconds)
    one, many = statistics.median(times[1]), statistics.median(times[all_cpus])
    return {"mode": "preprocess", "cases": args.cases, "size": args.size, "dim": args.dim, "cpus": all_cpus,
            "seconds_1_worker": round(one, 2), f"seconds_{all_cpus}_workers": round(many, 2),
            "cases_per_s_1_worker": round(args.cases / one, 3),
            f"cases_per_s_{all_cpus}_workers": round(args.cases / many, 3),
            "seconds_per_case_1_worker": round(one / args.cases, 3),
            "speedup": round(one / many, 2)}


def bench_loader(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from nnunet_ray.loading.bench import loader_throughput

    device_id = 0 if torch.cuda.is_available() else None
    runs: dict[str, dict[str, Any]] = {
        "3d_4x128^3_b2": dict(dim=3, channels=4, patch_size=(128, 128, 128), batch_size=2),
        "2d_4x192x160_b16": dict(dim=2, channels=4, patch_size=(192, 160), batch_size=16, nvol=1)}
    result = {"mode": "loader", "device": "gpu" if device_id is not None else "cpu"}
    for name, kwargs in runs.items():
        stats = loader_throughput(**kwargs, batches=args.batches, device_id=device_id, data_dir=work / name)
        result[f"{name}_patches_per_s"] = round(stats["patches_per_s"], 2)
    return result


def bench_step(args: argparse.Namespace, work: Path) -> dict:
    import time

    import torch

    from nnunet_ray.model.losses import DiceCELoss
    from nnunet_ray.model.unet import build_unet
    from nnunet_ray.planning.presets import preset_plans

    plans = preset_plans(args.task, args.dim)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = (args.batch_size, plans.in_channels, *plans.patch_size)
    image = torch.randn(shape, device=device)
    label = torch.randint(0, plans.n_classes, (args.batch_size, 1, *plans.patch_size), device=device)
    result = {"mode": "step", "task": args.task, "dim": args.dim, "batch_size": args.batch_size, "device": device}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_unet(plans).to(device)
        optimizer = torch.optim.RAdam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_fn, dtype = DiceCELoss(), torch.float16 if device == "cuda" else torch.bfloat16
        times = []
        for step in range(args.warmup_steps + args.batches):
            start = time.perf_counter()
            with torch.autocast(device_type=device, dtype=dtype, enabled=amp):
                loss = loss_fn(model(image), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup_steps:
                times.append(time.perf_counter() - start)
        result[f"step_ms_{'amp' if amp else 'fp32'}"] = round(1000 * statistics.mean(times), 1)
    result["amp_speedup"] = round(result["step_ms_fp32"] / result["step_ms_amp"], 2)
    return result


def _merge_last_class(raw: Path) -> None:
    """Hippocampus has 3 classes, the synthetic task 4: relabel class 3 as 2 so the MSD preset applies."""
    import nibabel as nib
    import numpy as np

    meta = json.loads((raw / "dataset.json").read_text())
    meta["labels"].pop("3")
    (raw / "dataset.json").write_text(json.dumps(meta, indent=2))
    for path in sorted((raw / "labelsTr").glob("*.nii.gz")):
        image = cast(nib.Nifti1Image, nib.load(str(path)))  # typed as any image; a NIfTI file is one
        label = np.asarray(image.dataobj).astype(np.uint8)
        nib.save(nib.Nifti1Image(np.where(label == 3, 2, label).astype(np.uint8), image.affine, image.header),
                 str(path))


def _task04_data(work: Path, cases: int) -> Path:
    from nnunet_ray.distributed.preprocess import preprocess_dataset

    raw = work / "raw" / "Task04_Hippocampus"  # name + 1 channel + 3 classes select the preset (40x56x40, 1 mm)
    make_synthetic_task(SynthConfig(out=str(raw), cases=cases, test=0, size=48, seed=4).validate())
    _merge_last_class(raw)
    summary = preprocess_dataset(PreprocessConfig(data=str(raw), results=str(work / "pre"), dim=3))
    assert summary.ok, summary.line()
    return Path(summary.out_dir)  # a Path already: the results root is local


def _fit_without_ray(cfg) -> float:
    """The worker loop of one fold, in this process: the same loaders, model, validation and checkpoints."""
    import time

    from nnunet_ray.runs.checkpoint import LocalCheckpoints
    from nnunet_ray.training.in_process import fit_in_process

    start = time.perf_counter()
    run_dir = Path(cfg.results) / "no_ray"
    fit_in_process(cfg, report=LocalCheckpoints(run_dir), log_dir=run_dir)
    return time.perf_counter() - start


def bench_train(args: argparse.Namespace, work: Path) -> dict:
    import dataclasses
    import time

    from nnunet_ray.config import TrainConfig
    from nnunet_ray.distributed.train import benchmark_train, train_fold

    data = _task04_data(work, args.cases)
    base = TrainConfig(data=str(data), results=str(work / "results"), batch_size=args.batch_size,
                       warmup=args.warmup_steps, train_batches=args.batches, dali_threads=1).validate()
    result: dict = {"mode": "train", "preset": "Task04 3D (patch 40x56x40)", "batch_size": args.batch_size}
    for workers in (1, 2):
        perf = benchmark_train(dataclasses.replace(base, workers=workers))
        result[f"img_per_s_{workers}_worker"] = round(perf["throughput_train"], 2)
        result[f"latency_ms_mean_{workers}_worker"] = round(perf["latency_train_mean"], 1)
    result["speedup_2_vs_1"] = round(result["img_per_s_2_worker"] / result["img_per_s_1_worker"], 2)
    one_epoch = dataclasses.replace(base, min_epochs=1, max_epochs=1, warmup=0, experiment="overhead")
    start = time.perf_counter()
    train_fold(one_epoch)
    with_ray = time.perf_counter() - start
    without_ray = _fit_without_ray(one_epoch)
    result.update(one_epoch_s_ray=round(with_ray, 1), one_epoch_s_no_ray=round(without_ray, 1),
                  ray_overhead_s=round(with_ray - without_ray, 1))
    return result


CV_ENGINES = (("tune_1w", "tune", 1), ("train_1w", "train", 1), ("train_2w", "train", 2))


def bench_cv(args: argparse.Namespace, work: Path) -> dict:
    """The same 5-fold CV three times on one local cluster (started first, timed apart): 1-worker folds trained in
    their Tune trials, 1-worker folds on Ray Train, 2-worker folds on Ray Train (DDP)."""
    import time

    from nnunet_ray.config import CVConfig, TrainConfig
    from nnunet_ray.distributed.cluster import cluster_cpus, init_ray

    start = time.perf_counter()
    init_ray()  # before the data is preprocessed on it: the local cluster's start-up, timed apart from the trials
    result: dict = {"mode": "cv", "folds": 5, "cluster_start_s": round(time.perf_counter() - start, 1)}
    data = _task04_data(work, args.cases)
    train = TrainConfig(min_epochs=1, max_epochs=1, train_batches=args.batches, batch_size=args.batch_size,
                        dali_threads=1, warmup=0, image_every=0)
    for label, engine, workers in CV_ENGINES:
        cfg = CVConfig(data=str(data), results=str(work / "results"), folds="0-4", name=f"bench_{label}",
                       engine=engine, workers_per_trial=workers, train=train)
        result[label] = _cv_overhead(cfg, slots=max(1, cluster_cpus() // workers))
    result["overhead_ratio_train_1w_vs_tune_1w"] = round(
        result["train_1w"]["overhead_s_per_trial"] / max(result["tune_1w"]["overhead_s_per_trial"], 0.1), 1)
    return result


def _cv_overhead(cfg, *, slots: int) -> dict:
    """Run one CV and account its overhead: per trial, (wall - its in-worker work packed on ``slots`` concurrent
    trials) x slots / trials; and each trial's own wall (``seconds``) over its in-worker training and validation."""
    import time

    from nnunet_ray.distributed.cv import run_cv

    start = time.perf_counter()
    run_cv(cfg)
    wall = time.perf_counter() - start
    trials = run_summaries(Path(cfg.results) / cfg.name)
    work = sum(t.seconds_in_worker or 0.0 for t in trials)
    return {"engine": trials[0].engine, "trials": len(trials), "trials_at_once": slots,
            "wall_s": round(wall, 1), "sum_in_worker_s": round(work, 1),
            "overhead_s_per_trial": round((wall - work / slots) * slots / len(trials), 1),
            "trial_wall_over_work": round(statistics.mean(t.seconds / (t.seconds_in_worker or math.inf)
                                                           for t in trials), 2)}


def bench_sweep(args: argparse.Namespace, work: Path) -> dict:
    """The same seeded learning-rate sweep twice, with ASHA and with every trial trained to the end."""
    import time

    from nnunet_ray.config import TrainConfig, TuneConfig
    from nnunet_ray.distributed.sweep import run_sweep

    data = _task04_data(work, args.cases)
    train = TrainConfig(min_epochs=args.epochs, max_epochs=args.epochs, train_batches=args.batches,
                        batch_size=args.batch_size, dali_threads=1, warmup=0, image_every=0)
    result: dict = {"mode": "sweep", "configurations": args.samples, "epochs": args.epochs}
    for scheduler in ("asha", "none"):
        start = time.perf_counter()
        outcome = run_sweep(TuneConfig(data=str(data), results=str(work / "results"), folds="0",
                                       learning_rate="loguniform:1e-4:3e-2", num_samples=args.samples,
                                       scheduler=scheduler, name=f"sweep_{scheduler}", train=train))
        result[f"{scheduler}_wall_s"] = round(time.perf_counter() - start, 1)
        result[f"{scheduler}_epochs_trained"] = int(outcome["table"]["epochs"].sum())
        result[f"{scheduler}_best_config"] = outcome["best_config"]
        if scheduler == "asha":
            result["asha_stopped_trials"] = outcome["stopped_early"]
    result["wall_saved_s"] = round(result["none_wall_s"] - result["asha_wall_s"], 1)
    result["asha_vs_full_wall"] = round(result["asha_wall_s"] / result["none_wall_s"], 2)
    return result


class _TimedCheckpoints:
    """``LocalCheckpoints`` that also times what an epoch spends outside ``fit``'s train + validation timers.

    The gap between two reports, minus the epoch's ``epoch_seconds`` (training + validation + logs), is the
    checkpoint write; the report itself (copying it to last/ and best/) is added to it. The first gap also holds
    ``fit``'s setup (building the model and optimizer), a fraction of a second here.
    """

    def __init__(self, run_dir: Path):
        import time

        from nnunet_ray.runs.checkpoint import LocalCheckpoints

        self.inner, self.clock = LocalCheckpoints(run_dir), time.perf_counter
        self.last = self.clock()
        self.rows: list[dict] = []

    def __call__(self, metrics: dict, checkpoint_dir) -> None:
        start = self.clock()
        self.inner(metrics, checkpoint_dir)
        end = self.clock()
        validation = metrics["epoch_seconds"] - metrics["train_seconds"]
        self.rows.append({"train": metrics["train_seconds"], "validation": validation,
                          "checkpoint": start - self.last - metrics["epoch_seconds"] + end - start,
                          "validated": not math.isnan(metrics["dice_mean"]),
                          "checkpointed": checkpoint_dir is not None})
        self.last = end


def _epoch_split(cfg) -> dict:
    from nnunet_ray.training.in_process import fit_in_process

    timed = _TimedCheckpoints(Path(cfg.results))
    timed.last = timed.clock()
    fit_in_process(cfg, report=timed, log_dir=cfg.results)
    rows, n = timed.rows, len(timed.rows)
    split = {k: round(sum(r[k] for r in rows) / n, 2) for k in ("train", "validation", "checkpoint")}
    validated, written = [r for r in rows if r["validated"]], [r for r in rows if r["checkpointed"]]
    return {**split, "epoch": round(sum(split.values()), 2), "epochs": n, "validations": len(validated),
            "seconds_per_validation": round(sum(r["validation"] for r in validated) / max(1, len(validated)), 2),
            "checkpoints": len(written),
            "seconds_per_checkpoint": round(sum(r["checkpoint"] for r in written) / max(1, len(written)), 2)}


def bench_epoch(args: argparse.Namespace, work: Path) -> dict:
    import dataclasses

    import torch

    from nnunet_ray.config import TrainConfig
    from nnunet_ray.distributed.preprocess import preprocess_dataset

    raw = work / "raw" / "Task99_EpochBench"
    make_synthetic_task(SynthConfig(out=str(raw), cases=10, test=0, size=args.size, seed=8).validate())
    summary = preprocess_dataset(PreprocessConfig(data=str(raw), results=str(work / "pre"), dim=args.dim))
    assert summary.ok, summary.line()
    torch.set_num_threads(2)
    base = TrainConfig(data=str(summary.out_dir), results=str(work / "default"), batch_size=args.batch_size,
                       min_epochs=args.epochs, max_epochs=args.epochs, dali_threads=1, cpus_per_worker=2,
                       image_every=0).validate()
    result: dict = {"mode": "epoch", "cases": 10, "size": args.size, "dim": args.dim, "epochs": args.epochs,
                    "patch_size": list(load_plans(summary.out_dir).patch_size)}
    result["every_epoch"] = _epoch_split(base)
    if args.val_every or args.checkpoint_every:
        cheaper = dataclasses.replace(base, results=str(work / "cheaper"), val_every=args.val_every,
                                      checkpoint_every=args.checkpoint_every).validate()
        result[f"val_every_{args.val_every}_checkpoint_every_{args.checkpoint_every}"] = \
            _epoch_split(cheaper)
    return result


MODES = {"epoch": bench_epoch, "preprocess": bench_preprocess, "loader": bench_loader, "step": bench_step,
         "train": bench_train, "predict": bench_predict, "cv": bench_cv, "sweep": bench_sweep}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=tuple(MODES), default="preprocess")
    parser.add_argument("--cases", type=int, default=24, help="synthetic training cases")
    parser.add_argument("--size", type=int, default=192, help="preprocess: synthetic volume edge (voxels)")
    parser.add_argument("--modalities", type=int, default=4, help="preprocess: channels per case (BraTS-like: 4)")
    parser.add_argument("--dim", type=int, default=3, choices=(2, 3))
    parser.add_argument("--task", type=int, default=4, help="step: MSD preset (1-10)")
    parser.add_argument("--batch-size", type=int, default=2, help="step/train: per-worker batch size")
    parser.add_argument("--batches", type=int, default=5,
                        help="loader/step/train: timed batches (train: also the steps of the 1-epoch overhead run)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="step/train: untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the side-by-side pair; medians are reported")
    parser.add_argument("--volumes", type=int, default=4, help="predict: synthetic test volumes for the ensemble")
    parser.add_argument("--volume-size", type=int, default=64, help="predict: synthetic volume edge (voxels)")
    parser.add_argument("--epochs", type=int, default=10, help="epoch / sweep: epochs per run / per trial")
    parser.add_argument("--samples", type=int, default=4, help="sweep: configurations drawn")
    parser.add_argument("--val-every", type=int, default=0, help="epoch: second run's --val-every (0 = no second run)")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="epoch: second run's --checkpoint-every")
    parser.add_argument("--workdir", default="", help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", default="", help="also write the result to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        result = MODES[args.mode](args, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + os.linesep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
