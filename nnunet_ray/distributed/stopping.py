"""Ctrl-C and SIGTERM stop a driver cleanly: what finished is kept, the trials end, the local cluster goes with it.

SIGTERM is what `timeout`, SLURM and Kubernetes send. Left alone it meets the handler ``ray.init`` installs (a
stack dump and an abort that leaves the cluster's processes behind), so ``install`` (called by ``init_ray``) routes
SIGINT and SIGTERM to one handler:

- while Ray Tune runs trials (``tune_stops_gracefully``), the first signal asks Tune to stop gracefully through
  the SIGUSR1 handler Tune registers for exactly that (``ray/tune/tune.py``, ``_setup_signal_catching``): Tune saves
  the experiment state, ends the trials and returns, and the command then says what finished (``requested()``);
- otherwise, and on a second signal, it raises KeyboardInterrupt, which the CLI turns into one line; Ray's exit
  hook then stops the local cluster this process started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from nnunet_ray.distributed.ray_internals import TUNE_GRACEFUL_STOP_SIGNAL

_requested = threading.Event()
_tune_running = threading.Event()


def install() -> None:
    """Route SIGINT and SIGTERM to ``_on_stop_signal`` (after ``ray.init``, which replaces SIGTERM's handler)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_stop_signal)
        signal.signal(signal.SIGTERM, _on_stop_signal)


def _on_stop_signal(signum: int, frame: object) -> None:
    first = not _requested.is_set()
    _requested.set()
    if first and _tune_running.is_set():
        os.kill(os.getpid(), TUNE_GRACEFUL_STOP_SIGNAL)
        return
    raise KeyboardInterrupt


def requested() -> bool:
    """Whether a stop signal arrived since this process started."""
    return _requested.is_set()


@contextlib.contextmanager
def tune_stops_gracefully() -> Iterator[None]:
    """While Tune runs: the first stop signal goes to Tune's own graceful-stop handler; Tune's SIGINT handler stays off,
    since it would replace ``install``'s handler (and never see SIGTERM)."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _tune_running.set()
    try:
        yield
    finally:
        _tune_running.clear()
