"""A sweep's wall-time budget (``tune --budget HH:MM:SS``), on Ray Tune's own stopping mechanism.

``SweepBudget`` is the experiment's ``RunConfig(stop=...)``. Once the budget has passed, its ``stop_all()`` returns
True and Tune (Ray 2.60, ``ray/tune/execution/tune_controller.py::_stop_experiment_if_needed``) marks the search
finished, so no further trial is drawn, and ends every trial not yet terminated: a running one is stopped as ASHA
stops one (no error; its checkpoints are kept), a pending one becomes TERMINATED without ever starting. The
experiment is then complete, not failed: ``--resume`` has nothing left to run.

It is also a Tune callback: ``on_step_begin`` hands it the trials, so when it fires it records which it stopped
running and which never started in ``RESULTS/NAME/budget.json`` (``read_budget_record``): the summary must not count
a trial the budget cut short as one ASHA stopped. The clock starts at Tune's first step (as Tune's own
``TimeoutStopper``): Ray's start-up and the checks before are not the sweep's time. ``tuner.pkl`` holds the stopper
as constructed, so ``--resume`` runs with the same budget, counted again from its start.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ray import tune

from nnunet_ray.data import storage
from nnunet_ray.data.records import RecordError, check_record, read_record

BUDGET_FILE = "budget.json"
BUDGET_VERSION = 1
RUNNING = ("RUNNING", "PAUSED")  # Tune's Trial statuses of a trial that has started and not ended

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BudgetRecord:
    """``budget.json``: the budget that ran out, the trials it stopped while they trained and those it never
    started (Tune trial folder names)."""

    budget_s: float
    stopped_running: tuple[str, ...] = ()
    not_started: tuple[str, ...] = ()
    version: int = BUDGET_VERSION

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, *, source: str = BUDGET_FILE) -> BudgetRecord:
        """Raises RecordError naming ``source``: not an object, a newer version, or malformed."""
        values = check_record(data, current=BUDGET_VERSION, source=source, what="sweep budget record")
        try:
            return cls(budget_s=float(values["budget_s"]), stopped_running=tuple(map(str, values["stopped_running"])),
                       not_started=tuple(map(str, values["not_started"])))
        except (KeyError, TypeError, ValueError) as err:
            raise RecordError(f"{source}: not a sweep budget record ({type(err).__name__}: {err})") from err


class SweepBudget(tune.Stopper, tune.Callback):
    """Stops the whole experiment ``seconds`` after Tune's first step and writes ``budget.json``.

    Args:
        seconds: the budget (``TuneConfig.budget`` in seconds).
        experiment: the experiment folder (path or URI) the record goes to.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, seconds: float, experiment: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.experiment, self.clock = seconds, experiment, clock
        self._started: float | None = None
        self._trials: list[Any] = []
        self.reached = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # no single trial is stopped by the budget alone: stop_all ends them together

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._trials = trials

    def stop_all(self) -> bool:
        now = self.clock()
        if self._started is None:
            self._started = now
        if not self.reached and now - self._started >= self.seconds:
            self.reached = True
            self._record()
        return self.reached

    def _record(self) -> None:
        running = sorted(_name(t) for t in self._trials if t.status in RUNNING)
        pending = sorted(_name(t) for t in self._trials if t.status == "PENDING")
        log.info("sweep budget of %.0f s reached: stopping %d running trial(s); %d pending trial(s) not started",
                 self.seconds, len(running), len(pending))
        storage.write_json(storage.join(self.experiment, BUDGET_FILE),
                           BudgetRecord(self.seconds, tuple(running), tuple(pending)).to_json())

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into tuner.pkl before the experiment runs; a restored experiment counts its budget anew.
        return {**self.__dict__, "_started": None, "_trials": [], "reached": False}


def _name(trial: Any) -> str:
    """The trial's folder name, as ``tune_results.csv`` names it."""
    return PurePosixPath(trial.path).name


def read_budget_record(experiment: str) -> BudgetRecord | None:
    """``budget.json`` of the experiment, or None when its budget never ran out.

    Raises:
        RecordError: the file is not JSON or not a budget record, naming it.
    """
    location = storage.join(experiment, BUDGET_FILE)
    if not storage.is_file(location):
        return None
    data, source = read_record(location)
    return BudgetRecord.from_json(data, source=source)
