"""Per-epoch logs of a training run, written by rank 0: ``metrics.jsonl`` and TensorBoard events.

``<log_dir>/metrics.jsonl`` has exactly one JSON line per finished epoch. A resumed run first drops the lines of
epochs at or after the one it restarts from, so a crash and restart never repeats or skips an epoch; TensorBoard
gets the same treatment through ``SummaryWriter(purge_step=...)``. ``<log_dir>/tensorboard/`` holds train/val
loss, per-class and mean Dice, LR, throughput, and every few epochs a validation slice with the label and the
prediction overlaid (``tensorboard --logdir <results>`` shows every run side by side).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from nnunet_ray.data.atomic import save_text

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"
# Overlay colours per foreground class (RGB), cycled when there are more classes.
COLOURS = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.5, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0]])


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (strict JSON), tensors and numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (torch.Tensor, np.generic)):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl file (a missing file has none)."""
    path = Path(path)
    return parse_metrics(path.read_text()) if path.is_file() else []


def parse_metrics(text: str) -> list[dict]:
    """The records of metrics.jsonl content (read from wherever the run folder is)."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line torn by a crash mid-write: that epoch is redone on resume anyway
            continue
    return records


def truncate_metrics(path: str | Path, start_epoch: int) -> None:
    """Keep only the records of epochs before ``start_epoch`` (atomic rewrite; no-op without the file)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_metrics(path) if r.get("epoch", -1) < start_epoch]
    save_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def progress_line(record: dict) -> str:
    """One human-readable line per epoch, e.g. ``epoch 3: train_loss 0.2930 dice_mean 0.8860 (best 0.8930 @ 2) ...``."""
    parts = [f"epoch {record['epoch']}:"]
    for key in ("train_loss", "val_loss", "dice_mean"):
        value = record.get(key)
        if value is not None and math.isfinite(value):
            parts.append(f"{key} {value:.4f}")
    best = record.get("best_dice")
    if best is not None and math.isfinite(best):
        parts.append(f"(best {best:.4f} @ {record.get('best_epoch')})")
    if record.get("lr") is not None:
        parts.append(f"lr {record['lr']:.2e}")
    if record.get("train_img_per_s") is not None:
        parts.append(f"{record['train_img_per_s']:.1f} img/s")
    if record.get("epoch_seconds") is not None:
        parts.append(f"{record['epoch_seconds']:.1f} s")
    return " ".join(parts)


MIN_IMAGE_EDGE = 256  # pixels: overlays smaller than this are upscaled by an integer factor


def pick_slice(label: torch.Tensor) -> int:
    """Index of the Z slice of a (Z, Y, X) label with the most foreground (the middle one if there is none)."""
    counts = (label > 0).flatten(1).sum(1)
    return int(counts.argmax()) if int(counts.max()) > 0 else label.shape[0] // 2


def overlay(image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor, *, alpha: float = 0.5) -> torch.Tensor:
    """Side-by-side picture of one slice: label overlaid on the left, prediction on the right.

    Args:
        image: (Y, X) intensities (any range; min-max scaled to grey).
        label, pred: (Y, X) integer class maps; class 0 is left transparent.
        alpha: opacity of the class colours.

    Returns:
        (3, Y, 2 * X) float32 RGB in [0, 1].
    """
    grey = image.float()
    grey = (grey - grey.min()) / (grey.max() - grey.min()).clamp_min(1e-8)
    base = grey.unsqueeze(0).repeat(3, 1, 1)  # (3, Y, X)
    colours = torch.as_tensor(COLOURS, dtype=torch.float32)
    halves = []
    for classes in (label, pred):
        rgb = base.clone()
        for c in classes.unique().tolist():
            if c == 0:
                continue
            mask = classes == c
            colour = colours[(c - 1) % len(colours)].view(3, 1)
            rgb[:, mask] = (1 - alpha) * rgb[:, mask] + alpha * colour
        halves.append(rgb)
    return torch.cat(halves, dim=2)


class RunLog:
    """Rank 0's writer of metrics.jsonl and TensorBoard events for one run.

    Args:
        log_dir: the run's folder (created if needed).
        start_epoch: first epoch this process will log; later records of an earlier attempt are discarded.
        class_names: names of the foreground classes, for the per-class Dice tags.
        echo: also print one progress line per epoch to stdout.
    """

    def __init__(self, log_dir: str | Path, *, start_epoch: int = 0, class_names: Sequence[str] = (),
                 echo: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.echo = echo
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.log_dir / METRICS_FILE
        truncate_metrics(self.metrics_path, start_epoch)
        self.class_names = list(class_names)
        # purge_step hides events at or after start_epoch left by an attempt that crashed.
        self.writer = SummaryWriter(str(self.log_dir / TB_DIR), purge_step=start_epoch)

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record and write its scalars.

        Args:
            record: must hold ``epoch``; the known keys ``train_loss``, ``val_loss``, ``dice_mean``, ``dice``
                (per-class list), ``lr``, ``train_img_per_s``, ``epoch_seconds`` become TensorBoard scalars.
        """
        epoch = int(record["epoch"])
        if self.echo:
            # A plain stream write, not print(): Ray Train patches print() in workers to also log each line,
            # which shows every progress line twice on the driver.
            sys.stdout.write(progress_line(record) + "\n")
            sys.stdout.flush()
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(_clean(record)) + "\n")
        tags = {"train/loss": "train_loss", "train/lr": "lr", "train/img_per_s": "train_img_per_s",
                "train/epoch_seconds": "epoch_seconds", "val/loss": "val_loss", "val/dice_mean": "dice_mean"}
        for tag, key in tags.items():
            value = record.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, epoch)
        for index, value in enumerate(record.get("dice") or []):
            name = self.class_names[index] if index < len(self.class_names) else str(index + 1)
            self.writer.add_scalar(f"val/dice_{name}", value, epoch)
        self.writer.flush()

    def log_stop(self, line: str) -> None:
        """Say why training ended, after the last progress line (metrics.jsonl keeps one record per epoch)."""
        if self.echo:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def log_overlay(self, epoch: int, image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor) -> None:
        """Write the ``overlay`` of one validation slice ((Y, X) tensors) as image ``val/overlay``."""
        picture = overlay(image.cpu(), label.cpu(), pred.cpu())
        # Nearest-neighbour upscale so small (e.g. 64 px) slices are readable in TensorBoard's image panel.
        scale = max(1, MIN_IMAGE_EDGE // min(picture.shape[1:]))
        picture = picture.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
        self.writer.add_image("val/overlay", picture, epoch, dataformats="CHW")
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        self.writer.close()
