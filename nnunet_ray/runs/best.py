"""The one definition of "best": which validation number ranks epochs, and how ties and unvalidated epochs count.

Early stopping (``loop.EarlyStopping``), the no-Ray keeper of ``best/`` (``checkpoint.LocalCheckpoints``) and Ray's
checkpoint retention (``CheckpointConfig`` in the Ray layer, which keeps the best epoch's folder) all use this module;
the best folder itself is early stopping's best epoch (``checkpoint.best_checkpoint_name``), so
switching to another score (e.g. an exponential moving average of Dice, as nnU-Net v2's ``nnUNetTrainer`` keeps
for its best checkpoint) is one edit here.
"""

from __future__ import annotations

import math
from typing import TypeGuard

BEST_METRIC = "dice_mean"  # the epoch record's validation mean Dice over foreground classes
CHECKPOINT_SCORE = "checkpoint_score"  # reported to Ray each epoch: see checkpoint_score
SCORE_ORDER = "max"


def is_better(score: float | None, best: float) -> TypeGuard[float]:
    """Whether ``score`` beats ``best``: strictly higher, so on a tie the earlier epoch stays best; an epoch without
    validation (None or NaN) never is."""
    return score is not None and not math.isnan(score) and score > best


def checkpoint_score(best: float, best_epoch: int, epoch: int) -> float:
    """The score Ray ranks ``epoch``'s checkpoint by: ``best`` on the best epoch, else -1.

    Ray prefers the later checkpoint on ties; scoring only the epoch ``is_better`` picked keeps Ray's best
    checkpoint the same as early stopping's best epoch.
    """
    return best if best_epoch == epoch else -1.0
