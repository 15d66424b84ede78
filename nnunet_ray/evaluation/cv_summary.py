"""Cross-validation in the original space, summarised: per configuration (dim) the means over its folds, the CSV
of the per-run rows, and the printed table (``evaluate --cv``).
"""

from __future__ import annotations

import csv
import io

import numpy as np

from nnunet_ray.evaluation.report import METRICS


def per_configuration(rows: list[dict]) -> dict:
    """Per dim (``"3d"``): its folds, mean in-training Dice and the mean of every original-space metric."""
    out = {}
    for dim in sorted({r["dim"] for r in rows}, key=str):
        mine = [r for r in rows if r["dim"] == dim]
        trained = [r["training_dice"] for r in mine if r["training_dice"] is not None]
        out[f"{dim}d"] = {"folds": len(mine), "training_dice": float(np.mean(trained)) if trained else None,
                          **{k: float(np.mean([r[k] for r in mine])) for k in METRICS}}
    return out


def rows_csv(rows: list[dict]) -> str:
    """The per-run rows as CSV (run, dim, fold, cases, training Dice, metrics)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["run", "dim", "fold", "cases", "training_dice", *METRICS],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def cv_table(result: dict) -> str:
    """Printed table: per run and per configuration, in-training Dice next to the original-space metrics."""
    lines = [f"{'run':<32}{'train Dice':>11}{'Dice':>8}{'HD95 mm':>10}{'NSD':>8}"]
    named = [(r["run"], r) for r in result["runs"]] + [(f"mean {k}", v) for k, v in result["configurations"].items()]
    for name, r in named:
        trained = "-" if r["training_dice"] is None else f"{r['training_dice']:.4f}"
        lines.append(f"{name:<32}{trained:>11}{r['dice']:>8.4f}{r['hd95']:>10.2f}{r['nsd']:>8.4f}")
    best = result.get("best")
    if best:
        lines.append(f"best configuration: {best['configuration']} (mean Dice " + ", ".join(
            f"{k} {v:.4f}" for k, v in best["mean_dice"].items()) + "); largest component kept for classes "
            f"{best['largest_component'] or 'none'} -> {best['dice_postprocessed']:.4f}")
    return "\n".join(lines)
