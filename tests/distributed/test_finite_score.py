"""The score Tune schedules on stays finite when ``--val-every`` skips validations (their records hold NaN Dice)."""

from __future__ import annotations

import math

import pytest

from nnunet_ray.distributed.fold_run import SCORE, FiniteScoreReport
from nnunet_ray.runs.best import BEST_METRIC


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
