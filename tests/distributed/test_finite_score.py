"""The score Tune schedules on stays finite when ``--val-every`` skips validations (their records hold NaN Dice), and
the summary names the best checkpoint predict would pick."""

from __future__ import annotations

import math

import pytest

from nnunet_ray.config import TrainConfig
from nnunet_ray.distributed.fold_run import SCORE, FiniteScoreReport, write_run_summary
from nnunet_ray.model.unet import build_unet
from nnunet_ray.runs.best import BEST_METRIC
from nnunet_ray.runs.checkpoint import best_checkpoint, save_checkpoint
from tests.conftest import make_test_plans


def _scores(resume: dict | None, dice: list[float]) -> list[float]:
    sent: list[dict] = []
    report = FiniteScoreReport(resume, lambda metrics, _checkpoint: sent.append(metrics))
    for epoch, value in enumerate(dice):
        report({"epoch": epoch, BEST_METRIC: value, "best_dice": 0.0}, None)
    return [m[SCORE] for m in sent]


def test_skipped_validations_report_the_last_finite_score():
    # --val-every 2: epochs 1 and 3 are not validated and record NaN, as training.loop does.
    assert _scores(None, [math.nan, 0.3, math.nan, 0.2, math.nan]) == [0.0, 0.3, 0.3, 0.2, 0.2]


@pytest.mark.parametrize("progress, expected", [
    ({"metrics": {BEST_METRIC: 0.6}, "best_dice": 0.7}, 0.6),  # the checkpoint epoch was validated
    ({"metrics": {BEST_METRIC: math.nan}, "best_dice": 0.7}, 0.7),  # it was not: the run's best so far
    ({"metrics": {BEST_METRIC: math.nan}, "best_dice": -math.inf}, 0.0),  # nothing validated yet
])
def test_after_a_restart_the_score_starts_from_the_checkpoint(progress, expected):
    assert _scores({"progress": progress}, [math.nan]) == [expected]


def test_a_run_summary_names_the_folder_predict_would_pick(tmp_path):
    """summary.json's best_checkpoint (written by the Ray layer from fit's result) and predict's pick from the run
    folder (runs.checkpoint.best_checkpoint) are the same folder, whichever engine trained the run."""
    plans, cfg = make_test_plans(), TrainConfig(data="d", results=str(tmp_path))
    for epoch in (0, 1, 2):  # the loop checkpoints epoch 1 (a new best) and the last epoch
        if epoch != 0:
            save_checkpoint(tmp_path / "run" / f"epoch_{epoch:04d}", build_unet(plans), plans, cfg,
                                       progress={"epoch": epoch, "best_epoch": 1})
    summary = write_run_summary(cfg, name="run", run_dir=str(tmp_path / "run"), returned={"best_epoch": 1},
                                engine="tune", last_checkpoint=str(tmp_path / "run" / "epoch_0002"), start=0.0)
    assert summary["best_checkpoint"] == str(best_checkpoint(tmp_path / "run")) == \
        str(tmp_path / "run" / "epoch_0001")
