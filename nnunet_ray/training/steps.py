"""One optimisation step, one training epoch, and timed steps for benchmark mode.

Mixed precision (``--amp``): fp16 autocast + GradScaler on CUDA (bf16 autocast without a scaler with
``--amp-dtype bfloat16``), bf16 autocast on CPU (CPUs have no fast fp16), nothing without ``--amp``.
Optimizers as the reference (NVIDIA nnU-Net ``models/nn_unet.py::NNUnet.configure_optimizers``): RAdam from
``torch_optimizer``, whose weight decay is decoupled (``p -= lr * wd * p``, not an L2 term in the gradient), Adam with
decoupled weight decay (apex FusedAdam's default adam_w_mode), SGD with momentum 0.99. The reference's SGD ignores
``--weight-decay``; here SGD applies it as an L2 term (torch's, as nnU-Net v2's SGD), and the ``dle`` recipe gives
SGD none unless the flag is given (``config.recipes``). ``--nesterov``: Nesterov momentum (nnU-Net v2's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from nnunet_ray.inference.predictor import autocast

Batch = dict[str, torch.Tensor]
AllReduce = Callable[[torch.Tensor], Any]


def build_optimizer(params: Iterable[nn.Parameter], cfg) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, with ``cfg.learning_rate``, ``weight_decay``, ``momentum`` and
    ``nesterov``."""
    if cfg.optimizer == "radam":
        # torch's RAdam defaults to coupled L2; torch_optimizer.RAdam (the reference's) decays decoupled.
        return torch.optim.RAdam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                 decoupled_weight_decay=True)
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    raise ValueError(f"--optimizer: {cfg.optimizer!r} is not one of radam, adam, sgd")


def amp_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for this device, or None when mixed precision is off."""
    if not cfg.amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    return torch.bfloat16


def make_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """GradScaler, enabled only for fp16 on CUDA (bf16 has fp32's range and needs no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")


def sync(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_stream(loader: Any) -> Iterator[Batch]:
    """Endless batches: ``loader.next_batch()`` when it has one (a DALI stream), else ``iter(loader)`` repeated."""
    if hasattr(loader, "next_batch"):
        while True:
            yield loader.next_batch()
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yielded no batch")


def train_step(net: nn.Module, batch: Batch, *, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, dtype: torch.dtype | None, device: torch.device,
               clip: float = 0.0) -> torch.Tensor:
    """Forward, backward and update on one batch.

    Args:
        net: the (possibly DDP-wrapped) model in train mode.
        batch: {"image": (B, C, *patch) float, "label": (B, 1, *patch) int}.
        loss_fn: (logits or list of logits, label) -> scalar.
        dtype: autocast dtype or None.
        clip: max gradient norm (0 = no clipping); applied to unscaled gradients.

    Returns:
        The loss, a detached 0-d tensor on ``device`` (no host sync).
    """
    image = batch["image"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(dtype, device):
        loss = loss_fn(net(image), label)
    scaler.scale(loss).backward()
    if clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_epoch(net: nn.Module, stream: Iterator[Batch], *, steps: int, world_size: int = 1,
                all_reduce: AllReduce | None = None, **step_kwargs: Any) -> dict[str, float]:
    """``steps`` training steps; the loss is averaged over steps and ranks.

    Args:
        net: model in train mode.
        stream: endless batches (``batch_stream``).
        steps: number of steps.
        world_size: ranks, for the global throughput.
        all_reduce: in-place sum over ranks, or None on one rank.
        **step_kwargs: passed to ``train_step`` (loss_fn, optimizer, scaler, dtype, device, clip).

    Returns:
        {"train_loss": mean loss, "train_seconds": wall time, "train_img_per_s": global images (2D: slices) / s}.
    """
    device = step_kwargs["device"]
    net.train()
    total, images = torch.zeros((), device=device), 0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(stream)
        total += train_step(net, batch, **step_kwargs).float()
        images += batch["image"].shape[0]
    sync(device)
    seconds = time.perf_counter() - start
    summed = torch.stack([total, torch.tensor(float(steps), device=device)])
    if all_reduce is not None:
        all_reduce(summed)
    return {"train_loss": float(summed[0] / summed[1]), "train_seconds": seconds,
            "train_img_per_s": images * world_size / seconds}


def timed_steps(net: nn.Module, stream: Iterator[Batch], *, warmup: int, steps: int, global_batch: int,
                **step_kwargs: Any) -> dict[str, float]:
    """Benchmark mode: ``warmup`` untimed steps, then ``steps`` steps each timed with device syncs.

    Returns:
        {"throughput_train": global_batch / mean step time (images/s; 2D: slices/s), "latency_train_mean",
        "latency_train_90", "_95", "_99": step time in ms, "warmup_steps", "timed_steps", "global_batch"}.
    """
    device = step_kwargs["device"]
    net.train()
    for _ in range(warmup):
        train_step(net, next(stream), **step_kwargs)
    deltas = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        # Fetching the batch is timed too: a real epoch pays for it (as the reference's batch-start timestamps).
        train_step(net, next(stream), **step_kwargs)
        sync(device)
        deltas.append(time.perf_counter() - start)
    ms = np.asarray(deltas) * 1000.0
    return {"throughput_train": global_batch / float(np.mean(deltas)), "latency_train_mean": float(ms.mean()),
            "latency_train_90": float(np.percentile(ms, 90)), "latency_train_95": float(np.percentile(ms, 95)),
            "latency_train_99": float(np.percentile(ms, 99)), "warmup_steps": warmup, "timed_steps": steps,
            "global_batch": global_batch}
