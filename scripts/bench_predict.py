"""`scripts/benchmark.py --mode predict`: batched patches, per-volume sliding window, ensemble on 1 vs 2 actors.

Kept apart from benchmark.py (which imports ``bench_predict`` from here) so each file stays readable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nnunet_ray.config import SynthConfig, TrainConfig
from nnunet_ray.data.synth import make_synthetic_task

if TYPE_CHECKING:
    from nnunet_ray.planning.schema import Plans


def _latency_row(ms: list[float], batch: int) -> dict:
    import numpy as np

    return {"img_per_s": round(batch / (float(np.mean(ms)) / 1000), 2), "latency_ms_mean": round(float(np.mean(ms)), 1),
            **{f"latency_ms_p{q}": round(float(np.percentile(ms, q)), 1) for q in (90, 95, 99)}}


def _patch_predict_rows(args: argparse.Namespace, plans, device) -> dict:
    """Batched patch prediction as the seed's inference benchmark: fp32 / AMP, without / with flip TTA."""
    import time

    import torch

    from nnunet_ray.inference.predictor import make_predictor
    from nnunet_ray.model.unet import build_unet
    from nnunet_ray.training.steps import sync

    torch.manual_seed(0)
    model = build_unet(plans).to(device).eval()
    batch = torch.randn(args.batch_size, plans.in_channels, *plans.patch_size, device=device)
    rows = {}
    for tta in (False, True):
        for amp in (False, True):
            dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if amp else None
            predict = make_predictor(model, dtype=dtype, device=device, tta=tta, n_spatial=len(plans.patch_size))
            ms = []
            with torch.no_grad():
                for step in range(args.warmup_steps + args.batches):
                    start = time.perf_counter()
                    predict(batch)
                    sync(device)
                    if step >= args.warmup_steps:
                        ms.append(1000 * (time.perf_counter() - start))
            rows[f"{'amp' if amp else 'fp32'}{'_tta' if tta else ''}"] = _latency_row(ms, args.batch_size)
    return rows


def _bench_members(args: argparse.Namespace, work: Path) -> tuple[Path, Plans, Path]:
    """Synthetic test volumes with the MSD task's channel count and an experiment folder holding two randomly
    initialised 3D members with that task's preset plans (patch, spacing, topology; prediction cost does not depend
    on the weights)."""
    import torch

    from nnunet_ray.model.unet import build_unet
    from nnunet_ray.planning.presets import preset_plans
    from nnunet_ray.runs.checkpoint import save_checkpoint
    from nnunet_ray.runs.names import fold_run_name

    plans = preset_plans(args.task, 3)
    raw = work / "raw" / f"Task{args.task:02d}_Bench"
    make_synthetic_task(SynthConfig(out=str(raw), cases=2, test=args.volumes, size=args.volume_size,
                                    modalities=plans.in_channels, ct=plans.modalities[0] == "CT", seed=5).validate())
    experiment = work / "experiment"
    for fold in (0, 1):  # two members, as two folds of one configuration
        torch.manual_seed(fold)
        save_checkpoint(experiment / fold_run_name(3, fold) / "best", build_unet(plans), plans,
                        TrainConfig(data=str(work / "pre"), results=str(work), dim=3, fold=fold))
    return raw, plans, experiment


def _volume_seconds(raw: Path, experiment: Path, device) -> dict:
    """Preprocessing + sliding window (overlap 0.5) + restore to the original grid of one case, one member."""
    import time

    import nibabel as nib

    from nnunet_ray.data.dataset import load_dataset
    from nnunet_ray.inference.ensemble import EnsemblePredictor, WindowOptions
    from nnunet_ray.inference.members import load_member
    from nnunet_ray.runs.names import fold_run_name

    case = load_dataset(raw).test[0]
    image = cast(nib.Nifti1Image, nib.load(str(case.images[0])))  # typed as any image; a NIfTI file is one
    result: dict[str, Any] = {"volume_shape_xyz": list(image.shape[:3])}
    for tta in (False, True):
        predictor = EnsemblePredictor([load_member(experiment / fold_run_name(3, 0) / "best")], device=device,
                                      options=WindowOptions(tta=tta))
        predictor(case)  # warm-up
        start = time.perf_counter()
        predictor(case)
        key = f"volume_s{'_tta' if tta else ''}"
        result[key] = round(time.perf_counter() - start, 2)
        print(f"{key}: {result[key]}", file=sys.stderr, flush=True)
    return result


def _ensemble_throughput(args: argparse.Namespace, raw: Path, experiment: Path, work: Path) -> dict:
    """Both members over the same test volumes with 1 and with 2 Ray actors (actor start-up included)."""
    from nnunet_ray.config import PredictConfig
    from nnunet_ray.distributed.cluster import init_ray
    from nnunet_ray.distributed.predict import predict_folder

    init_ray()
    result = {}
    for actors in (1, 2):
        cfg = PredictConfig(models=(str(experiment),), input=str(raw), out=str(work / f"preds_{actors}"),
                            actors=actors, cpus_per_actor=1).validate()
        summary = predict_folder(cfg)
        assert summary.ok and len(summary.done) == args.volumes, summary.line()
        result[f"ensemble_cases_per_s_{actors}_actor"] = round(args.volumes / summary.seconds, 3)
        result[f"ensemble_s_{actors}_actor"] = round(summary.seconds, 1)
        # The pool starts what the cluster holds (one actor per GPU by default): a 1-GPU machine runs 1, not 2.
        result[f"ensemble_actors_started_{actors}_actor"] = summary.actors
    result["ensemble_speedup_2_vs_1"] = round(result["ensemble_cases_per_s_2_actor"]
                                              / result["ensemble_cases_per_s_1_actor"], 2)
    return result


def bench_predict(args: argparse.Namespace, work: Path) -> dict:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raw, plans, experiment = _bench_members(args, work)
    result: dict = {"mode": "predict", "device": device.type, "task": args.task,
                    "patch": "x".join(map(str, plans.patch_size)), "batch_size": args.batch_size,
                    "patch_batches": _patch_predict_rows(args, plans, device)}
    print(f"patch batches: {result['patch_batches']}", file=sys.stderr, flush=True)
    result.update(_volume_seconds(raw, experiment, device))
    result.update(_ensemble_throughput(args, raw, experiment, work))
    return result
