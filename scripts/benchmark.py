"""Side-by-side benchmarks; each mode prints ratios measured in one run (machines here are shared and noisy).

    python scripts/benchmark.py --mode preprocess [--cases 12 --size 96 --rounds 1]

preprocess: the same synthetic set preprocessed with 1 worker and with every CPU of the local Ray cluster
(fresh output folders each time; planning is excluded from the timing); prints cases/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from nnunet_ray.config import PreprocessConfig, SynthConfig
from nnunet_ray.data.synth import make_synthetic_task


def bench_preprocess(args: argparse.Namespace, work: Path) -> dict:
    from nnunet_ray.distributed.cluster import cluster_cpus, init_ray
    from nnunet_ray.distributed.preprocess import preprocess_dataset

    raw = work / "raw" / "Task98_Bench"
    make_synthetic_task(SynthConfig(out=str(raw), cases=args.cases, test=0, size=args.size, seed=1).validate())
    init_ray()
    all_cpus = cluster_cpus()
    times: dict[int, list[float]] = {1: [], all_cpus: []}
    for round_index in range(args.rounds):
        for workers in (1, all_cpus):
            cfg = PreprocessConfig(data=str(raw), results=str(work / f"pre_r{round_index}_w{workers}"),
                                   dim=args.dim, num_workers=workers)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("preprocess",), default="preprocess")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--dim", type=int, default=3, choices=(2, 3))
    parser.add_argument("--rounds", type=int, default=1, help="repeat the side-by-side pair; medians are reported")
    parser.add_argument("--workdir", default="", help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", default="", help="also write the result to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        result = bench_preprocess(args, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + os.linesep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
