"""The one definition of the best epoch: strictly higher wins, ties keep the earlier, unvalidated never wins."""

import math

import pytest

from nnunet_ray.runs import best, checkpoint
from nnunet_ray.training import loop


@pytest.mark.parametrize("score, current, expected", [
    (0.5, 0.4, True), (0.4, 0.4, False), (0.3, 0.4, False), (0.0, -math.inf, True),
    (math.nan, -math.inf, False), (None, -math.inf, False),
])
def test_is_better(score, current, expected):
    assert best.is_better(score, current) is expected


def test_checkpoint_score_marks_only_the_best_epoch():
    assert best.checkpoint_score(0.7, 3, 3) == 0.7
    assert best.checkpoint_score(0.7, 3, 4) == -1.0


def test_every_keeper_of_best_uses_the_one_definition():
    assert loop.CHECKPOINT_SCORE is best.CHECKPOINT_SCORE
    assert checkpoint.LocalCheckpoints("unused").metric == best.BEST_METRIC
    early = loop.EarlyStopping(patience=1, min_epochs=1)
    assert [early.update(e, s) for e, s in enumerate([0.4, 0.4, math.nan, 0.5])] == [True, False, False, True]


@pytest.mark.parametrize("best_epoch, expected", [
    (3, "epoch_0003"), (0, "epoch_0000"),
    (None, "epoch_0007"), (-1, "epoch_0007"),  # never validated: the latest checkpoint
])
def test_best_checkpoint_name(best_epoch, expected):
    assert checkpoint.best_checkpoint_name(best_epoch, "epoch_0007") == expected

