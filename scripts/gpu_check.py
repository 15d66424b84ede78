"""`make gpu-check`: the GPU paths end to end in a few minutes; one JSON line of results, non-zero exit on any failure.

    python scripts/gpu_check.py [--workdir DIR] [--cpu]

Checks, in order (each reports "ok", "skipped" with the reason, or "failed" with the error):
  train       2 epochs of a synthetic task on Ray Train with --gpus 1 --amp (fp16 autocast + GradScaler; the
              checkpoint's scaler state proves the scaler ran); on CPU, 1 CPU worker with bf16 autocast.
  dali_gpu    the DALI training pipeline on GPU 0 (mixed/GPU operators), two batches that must land on the GPU.
  ddp_nccl    1 epoch with --gpus 2 (DDP over NCCL) when at least 2 GPUs exist.
  benchmark   benchmark mode (timed training steps) on the Task01 BrainTumour 3D preset, batch 2, AMP: img/s next
              to the reference's 16.0 img/s on one A100 (NVIDIA nnU-Net README, PyTorch AMP, 1 GPU). Batches come
              from memory, so the figure is the model's step rate without data loading.
  shared_gpu  `nnunet-ray cv` of 2 folds with --gpus-per-trial 0.5: both single-worker trials train at once on one
              GPU, inside their Tune trials (needs CUDA).
  predict     `nnunet-ray predict`'s path with the best checkpoint: one raw case on the Ray actor pool (a GPU
              actor, AMP, flip TTA), back to the original grid, written as NIfTI with the input image's shape.
Without CUDA (or with --cpu) the same code runs on the CPU: CUDA-only checks are "skipped" and the benchmark
uses a 32^3 patch, so CI can run this script as a smoke test of everything but the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from nnunet_ray.config import PreprocessConfig, SynthConfig, TrainConfig
from nnunet_ray.runs.summary import run_summaries

REFERENCE_IMG_PER_S_A100 = 16.0  # Task01 3D, batch 2, AMP, 1x A100 80GB: NVIDIA nnU-Net README training performance


class Skipped(Exception):
    """A check that cannot run on this machine (the reason is reported, the run still passes)."""


@dataclass
class Context:
    """What the checks share: the device choice, the scratch folder and the results of earlier checks."""

    work: Path
    cuda: bool
    data: Path | None = None  # the preprocessed synthetic task
    best_checkpoint: str | None = None


def _prepare_data(ctx: Context) -> Path:
    from nnunet_ray.data.synth import make_synthetic_task
    from nnunet_ray.distributed.preprocess import preprocess_dataset

    if ctx.data is None:
        raw = make_synthetic_task(SynthConfig(out=str(ctx.work / "raw" / "Task99_GpuCheck"), cases=6, test=0,
                                              size=48, seed=3).validate())
        summary = preprocess_dataset(PreprocessConfig(data=str(raw), results=str(ctx.work / "pre"), nfolds=3))
        if not summary.ok:
            raise RuntimeError(summary.line())
        ctx.data = Path(summary.out_dir)  # a Path already: the work folder is local
    return ctx.data


def _train_config(ctx: Context, **overrides) -> TrainConfig:
    base = dict(data=str(_prepare_data(ctx)), results=str(ctx.work / "results"), gpus=1 if ctx.cuda else 0,
                workers=1, amp=True, min_epochs=2, max_epochs=2, batch_size=2, dali_threads=2, image_every=0)
    return TrainConfig(**{**base, **overrides}).validate()


def check_train(ctx: Context) -> dict:
    from nnunet_ray.distributed.train import train_fold
    from nnunet_ray.runs.checkpoint import load_checkpoint

    run = train_fold(_train_config(ctx, experiment="gpu_check_train"))
    if run["epochs"] != 2 or run["best_checkpoint"] is None:
        raise RuntimeError(f"expected 2 epochs and a best checkpoint, got {run}")
    ctx.best_checkpoint = run["best_checkpoint"]
    scaler = load_checkpoint(run["last_checkpoint"]).get("scaler") or {}
    if ctx.cuda and "scale" not in scaler:
        raise RuntimeError("--amp on CUDA saved no GradScaler state: fp16 loss scaling did not run")
    return {"epochs": run["epochs"], "best_dice": run["best_dice"], "seconds": round(run["seconds"], 1),
            "autocast": "float16 + GradScaler" if ctx.cuda else "bfloat16 (CPU, no scaler)"}


def check_dali_gpu(ctx: Context) -> dict:
    if not ctx.cuda:
        raise Skipped("needs CUDA")
    from nnunet_ray.data.folds import fold_case_ids
    from nnunet_ray.loading.pipelines import train_loader
    from nnunet_ray.planning.schema import load_plans

    data = _prepare_data(ctx)
    plans = load_plans(data)
    loader = train_loader(data, fold_case_ids(data, 0)[0], plans, batch_size=2, seed=0, device_id=0)
    start = time.perf_counter()
    batches = [loader.next_batch() for _ in range(2)]
    devices = {str(b[key].device) for b in batches for key in ("image", "label")}
    if devices != {"cuda:0"}:
        raise RuntimeError(f"DALI GPU batches landed on {devices}, not cuda:0")
    return {"batch_shape": list(batches[0]["image"].shape), "seconds": round(time.perf_counter() - start, 2)}


def check_ddp_nccl(ctx: Context) -> dict:
    gpus = torch.cuda.device_count() if ctx.cuda else 0
    if gpus < 2:
        raise Skipped(f"needs at least 2 GPUs (found {gpus})")
    from nnunet_ray.distributed.train import train_fold

    run = train_fold(_train_config(ctx, gpus=2, min_epochs=1, max_epochs=1, experiment="gpu_check_ddp"))
    return {"world_size": 2, "epochs": run["epochs"], "seconds": round(run["seconds"], 1)}


def check_shared_gpu(ctx: Context) -> dict:
    """Two folds as Tune trials holding half a GPU each: Tune runs them side by side on GPU 0."""
    if not ctx.cuda:
        raise Skipped("needs CUDA")
    from nnunet_ray.config import CVConfig
    from nnunet_ray.distributed.cv import run_cv

    train = TrainConfig(amp=True, min_epochs=2, max_epochs=2, batch_size=2, dali_threads=2, image_every=0)
    run_cv(CVConfig(data=str(_prepare_data(ctx)), results=str(ctx.work / "results"), folds="0,1",
                    name="gpu_check_shared", gpus_per_trial=0.5, train=train))
    runs = sorted(run_summaries(ctx.work / "results" / "gpu_check_shared"), key=lambda r: r.started_at)
    if [(r.engine, r.device, r.devices) for r in runs] != [("tune", "GPU", 0.5)] * 2:
        raise RuntimeError(f"expected two Tune-engine runs on half a GPU each, got {runs}")
    if runs[1].started_at >= runs[0].finished_at:
        raise RuntimeError("the two half-GPU trials ran one after the other, not side by side")
    return {"trials": 2, "gpus_per_trial": 0.5, "overlap_s": round(runs[0].finished_at - runs[1].started_at, 1),
            "seconds": [round(r.seconds, 1) for r in runs]}


def check_benchmark(ctx: Context) -> dict:
    from nnunet_ray.planning.patch import with_patch_size
    from nnunet_ray.planning.presets import preset_plans
    from nnunet_ray.training.benchmark import benchmark

    plans = preset_plans(1, 3)
    if not ctx.cuda:  # a CPU cannot step a 128^3, 4-channel U-Net in a smoke test's time
        plans = with_patch_size(plans, (32, 32, 32))
    device = torch.device("cuda:0" if ctx.cuda else "cpu")
    cfg = TrainConfig(data="-", results="-", batch_size=2, amp=True, warmup=5 if ctx.cuda else 1,
                      train_batches=30 if ctx.cuda else 2)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, plans.in_channels, *plans.patch_size, generator=g).to(device)
    label = torch.randint(0, plans.n_classes, (2, 1, *plans.patch_size), generator=g).to(device)
    perf = benchmark(cfg, plans, train_data=[{"image": image, "label": label}], device=device)
    return {"preset": "Task01_BrainTumour 3D", "patch_size": list(plans.patch_size), "batch_size": 2, "amp": True,
            "img_per_s": round(perf["throughput_train"], 2), "reference_img_per_s_1xA100": REFERENCE_IMG_PER_S_A100,
            "latency_ms_mean": round(perf["latency_train_mean"], 1),
            "data_loading": "excluded (batches in device memory)"}


def check_predict(ctx: Context) -> dict:
    """`nnunet-ray predict`'s path: one raw case on the Ray actor pool (one GPU actor, AMP, flip TTA), restored to
    the input grid and written as NIfTI with the input's header."""
    if ctx.best_checkpoint is None:
        raise RuntimeError("no checkpoint: the train check did not finish")
    import nibabel as nib

    from nnunet_ray.config import PredictConfig
    from nnunet_ray.data.dataset import load_dataset
    from nnunet_ray.distributed.predict import predict_folder

    _prepare_data(ctx)
    case = load_dataset(ctx.work / "raw" / "Task99_GpuCheck").training[0]
    cfg = PredictConfig(models=(str(ctx.best_checkpoint),), input=str(case.images[0].parent),
                        out=str(ctx.work / "predictions"), tta=True, amp=True, actors=1).validate()
    summary = predict_folder(cfg, cases=[case])
    if not summary.ok or summary.done != [case.case_id]:
        raise RuntimeError(summary.line() + "; " + "; ".join(summary.failed.values()))
    # nibabel types load() as any image; NIfTI files load as NIfTI images.
    written = cast(nib.Nifti1Image, nib.load(str(Path(summary.out_dir) / f"{case.case_id}.nii.gz")))
    source = cast(nib.Nifti1Image, nib.load(str(case.images[0])))
    if written.shape != source.shape[:3]:
        raise RuntimeError(f"prediction shape {written.shape} is not the input's {source.shape[:3]}")
    return {"case_id": case.case_id, "shape_xyz": list(written.shape), "tta": True, "amp": True,
            "actors": summary.actors, "seconds": round(summary.seconds, 2)}


CHECKS: dict[str, Callable[[Context], dict]] = {"train": check_train, "dali_gpu": check_dali_gpu,
                                                "ddp_nccl": check_ddp_nccl, "shared_gpu": check_shared_gpu,
                                                "benchmark": check_benchmark,
                                                "predict": check_predict}


def run_checks(ctx: Context, checks: dict[str, Callable[[Context], dict]]) -> dict:
    """Run every check; a failure is recorded (with its error) and the next check still runs."""
    results: dict[str, dict] = {}
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            results[name] = {"status": "ok", **check(ctx)}
        except Skipped as reason:
            results[name] = {"status": "skipped", "reason": str(reason)}
        except Exception as err:  # noqa: BLE001 - every check reports, then the exit status says it failed
            traceback.print_exc(file=sys.stderr)
            results[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        results[name]["wall_s"] = round(time.perf_counter() - start, 1)
    failed = [name for name, r in results.items() if r["status"] == "failed"]
    return {"ok": not failed, "failed": failed, "device": _device_name(ctx), "checks": results}


def _device_name(ctx: Context) -> str:
    return torch.cuda.get_device_name(0) if ctx.cuda else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="", help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--cpu", action="store_true", help="the CPU smoke path even when CUDA is present")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        ctx = Context(work=Path(tmp), cuda=torch.cuda.is_available() and not args.cpu)
        report = run_checks(ctx, CHECKS)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
