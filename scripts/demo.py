"""`make demo`: the main job end to end on the built-in synthetic dataset and a local Ray cluster.

    python scripts/demo.py --workdir demo_data

synth -> plan -> preprocess (Ray Data). Reruns reuse finished work (preprocessing skips finished cases).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_ray.config import PreprocessConfig, SynthConfig
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.preprocess import preprocess_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="demo_data", help="where the raw, preprocessed and results folders go")
    parser.add_argument("--cases", type=int, default=10, help="synthetic training cases")
    parser.add_argument("--dim", type=int, default=3, choices=(2, 3))
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    raw = work / "raw" / "Task99_Synthetic"
    if not (raw / "dataset.json").exists():
        print(f"[1/2] writing a synthetic task to {raw}", flush=True)
        make_synthetic_task(SynthConfig(out=str(raw), cases=args.cases, test=2, seed=0).validate())
    else:
        print(f"[1/2] reusing the synthetic task in {raw}", flush=True)
    print("[2/2] planning + preprocessing on a local Ray cluster (Ray Data)", flush=True)
    summary = preprocess_dataset(PreprocessConfig(data=str(raw), results=str(work / "preprocessed"), dim=args.dim))
    print(summary.line())
    print(f"preprocessed arrays, plans.json and splits.json are in {summary.out_dir}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
