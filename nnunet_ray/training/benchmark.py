"""Benchmark mode: time training steps on the real model, loss and loader, without validation or checkpoints.

``--benchmark`` runs ``--warmup`` untimed steps, then ``--train-batches`` timed ones, and reports throughput and
latency percentiles the way the reference's ``--benchmark`` does (``timed_steps``), into ``perf.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnunet_ray.data import storage
from nnunet_ray.planning.schema import Plans
from nnunet_ray.training.loop import setup
from nnunet_ray.training.steps import batch_stream, timed_steps

logger = logging.getLogger(__name__)

PERF_FILE = "perf.json"


def benchmark(cfg, plans: Plans, *, train_data: Any, device: torch.device, world_size: int = 1, rank: int = 0,
              prepare: Callable[[nn.Module], nn.Module] = lambda m: m, out_dir: str | Path | None = None) -> dict:
    """Benchmark mode: ``cfg.warmup`` untimed steps, then ``cfg.train_batches`` timed steps (default 100).

    Throughput counts the global batch (``batch_size * world_size``; 2D: slices). With ``out_dir``, rank 0
    writes ``<out_dir>/perf.json`` and logs it.

    Returns:
        ``timed_steps`` output plus "world_size", "batch_size", "dim", "amp".
    """
    tr = setup(cfg, plans, device=device, world_size=world_size, prepare=prepare)
    perf: dict[str, Any] = timed_steps(
        tr.net, batch_stream(train_data), warmup=cfg.warmup, steps=cfg.train_batches or 100,
        global_batch=cfg.batch_size * world_size, loss_fn=tr.loss_fn, optimizer=tr.optimizer, scaler=tr.scaler,
        dtype=tr.dtype, device=tr.device, clip=cfg.gradient_clip_val)
    perf.update({"world_size": world_size, "batch_size": cfg.batch_size, "dim": plans.dim,
                 "amp": cfg.amp, "device": device.type})
    if rank == 0 and out_dir is not None:
        save_perf(out_dir, perf)
        logger.info("%s", json.dumps(perf, indent=1))
    return perf


def save_perf(folder: str | Path, perf: dict[str, Any]) -> str:
    """Write ``<folder>/perf.json`` (a path or URI), the one writer of the file; returns its location."""
    location = storage.join(folder, PERF_FILE)
    storage.write_json(location, perf, indent=1)
    return location
