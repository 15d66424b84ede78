"""metrics.jsonl and TensorBoard logs: one line per epoch across restarts, readable events, overlays."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnunet_ray.training.logs import (
    METRICS_FILE,
    TB_DIR,
    RunLog,
    overlay,
    pick_slice,
    progress_line,
    read_metrics,
    truncate_metrics,
)


def _record(epoch, dice=0.5):
    return {"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "val_loss": 0.9, "dice_mean": dice,
            "dice": [dice, dice / 2], "lr": 1e-3, "train_img_per_s": 12.5, "epoch_seconds": 3.0}


def _scalars(log_dir, tag):
    acc = EventAccumulator(str(log_dir / TB_DIR))
    acc.Reload()
    return [(s.step, round(s.value, 6)) for s in acc.Scalars(tag)]


def test_run_log_writes_jsonl_and_tensorboard(tmp_path):
    log = RunLog(tmp_path, class_names=["organ", "lesion"])
    for epoch in range(3):
        log.log_epoch(_record(epoch))
    label = torch.zeros(8, 8, dtype=torch.long)
    label[2:5, 2:5] = 1
    log.log_overlay(2, torch.randn(8, 8), label, label.flip(0))
    log.close()
    records = read_metrics(tmp_path / METRICS_FILE)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert _scalars(tmp_path, "train/loss") == [(0, 1.0), (1, 0.5), (2, round(1 / 3, 6))]
    assert _scalars(tmp_path, "val/dice_lesion") == [(0, 0.25), (1, 0.25), (2, 0.25)]
    acc = EventAccumulator(str(tmp_path / TB_DIR))
    acc.Reload()
    assert {"val/dice_mean", "val/loss", "train/lr", "train/img_per_s", "val/dice_organ"} <= set(acc.Tags()["scalars"])
    assert acc.Tags()["images"] == ["val/overlay"]
    image = acc.Images("val/overlay")[0]
    assert (image.step, image.width, image.height) == (2, 16 * 32, 8 * 32)  # upscaled to a 256 px short edge


def test_non_finite_values_become_null_and_are_not_plotted(tmp_path):
    log = RunLog(tmp_path)
    log.log_epoch({"epoch": 0, "train_loss": 0.7, "dice_mean": float("nan"), "val_loss": None,
                   "dice": torch.tensor([0.5])})
    log.close()
    line = (tmp_path / METRICS_FILE).read_text()
    assert json.loads(line) == {"epoch": 0, "train_loss": 0.7, "dice_mean": None, "val_loss": None, "dice": [0.5]}
    acc = EventAccumulator(str(tmp_path / TB_DIR))
    acc.Reload()
    assert "val/dice_mean" not in acc.Tags()["scalars"]


def test_resumed_run_neither_repeats_nor_skips_an_epoch(tmp_path):
    first = RunLog(tmp_path)
    for epoch in range(4):  # epochs 0..3 logged, but the last checkpoint that survived is epoch 1
        first.log_epoch(_record(epoch, dice=0.1))
    first.close()
    second = RunLog(tmp_path, start_epoch=2)
    for epoch in range(2, 5):
        second.log_epoch(_record(epoch, dice=0.9))
    second.close()
    records = read_metrics(tmp_path / METRICS_FILE)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["dice_mean"] for r in records] == [0.1, 0.1, 0.9, 0.9, 0.9]
    # TensorBoard hides the crashed attempt's epochs 2 and 3 (purge_step), keeping one value per step.
    assert _scalars(tmp_path, "val/dice_mean") == [(0, 0.1), (1, 0.1), (2, 0.9), (3, 0.9), (4, 0.9)]


def test_truncate_metrics_without_a_file_is_a_no_op(tmp_path):
    truncate_metrics(tmp_path / METRICS_FILE, 3)
    assert read_metrics(tmp_path / METRICS_FILE) == []


def test_pick_slice():
    label = torch.zeros(5, 4, 4, dtype=torch.uint8)
    assert pick_slice(label) == 2
    label[1, :2] = 1
    label[3, :3] = 2
    assert pick_slice(label) == 3


def test_overlay_colours_only_foreground():
    image = torch.linspace(0, 1, 16).view(4, 4)
    label = torch.zeros(4, 4, dtype=torch.long)
    label[0, 0] = 1
    pred = torch.zeros(4, 4, dtype=torch.long)
    picture = overlay(image, label, pred)
    assert picture.shape == (3, 4, 8)
    assert 0 <= float(picture.min()) and float(picture.max()) <= 1
    grey = image.expand(3, 4, 4)
    assert torch.allclose(picture[:, :, 4:], grey)  # empty prediction: plain grey
    assert torch.allclose(picture[:, 1:, :4], grey[:, 1:])  # label only at (0, 0)
    assert picture[0, 0, 0] == pytest.approx(0.5)  # 0.5 grey (0) + 0.5 red (1.0)


def test_progress_line():
    record = {**_record(3, dice=0.25), "best_dice": 0.5, "best_epoch": 1}
    assert progress_line(record) == ("epoch 3: train_loss 0.2500 val_loss 0.9000 dice_mean 0.2500 (best 0.5000 @ 1) "
                                     "lr 1.00e-03 12.5 img/s 3.0 s")
    assert progress_line({"epoch": 0, "train_loss": 1.0, "dice_mean": float("nan")}) == "epoch 0: train_loss 1.0000"


def test_a_line_torn_by_a_crash_does_not_block_resume(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"epoch": 0, "train_loss": 1.0}\n{"epoch": 1, "train_lo')
    truncate_metrics(path, 1)
    assert read_metrics(path) == [{"epoch": 0, "train_loss": 1.0}]
