"""Smoke run of the learning core without Ray: DALI loader -> U-Net -> Dice+CE -> RAdam lowers the loss in 30 steps."""

from __future__ import annotations

import torch

from nnunet_ray.loading.pipelines import train_loader
from nnunet_ray.model.losses import DiceCELoss
from nnunet_ray.model.unet import build_unet
from nnunet_ray.planning.schema import load_plans
from nnunet_ray.training.steps import batch_stream


def test_thirty_plain_pytorch_steps_lower_the_loss(tiny_task_3d):
    torch.manual_seed(0)
    plans = load_plans(tiny_task_3d)
    case_ids = sorted(p.name[: -len("_x.npy")] for p in tiny_task_3d.glob("*_x.npy"))
    stream = batch_stream(train_loader(tiny_task_3d, case_ids, plans, batch_size=2, seed=0, num_threads=1))
    model = build_unet(plans)
    optimizer = torch.optim.RAdam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    loss_fn, losses = DiceCELoss(), []
    for _ in range(30):
        batch = next(stream)
        loss = loss_fn(model(batch["image"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, f"loss did not drop: first five {first:.3f}, last five {last:.3f}"
