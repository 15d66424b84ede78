"""Cross-validation on Ray Tune: 5 folds x 3D as 1-CPU trials on the 2-CPU session cluster, killed and resumed.

One experiment per engine serves every assertion: folds trained inside their Tune trials (``--engine tune``, the
default for one worker) and on Ray Train (``--engine train``, ~15-40 s per trial on 2 cores). Once two trials have
finished the driver gets SIGTERM (tune engine: it must stop cleanly) or SIGKILL (train engine), ``--resume``
finishes the rest, then the summary, the trial folders, the concurrency and the TensorBoard files are checked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray.train
import ray.tune
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnunet_ray import cli
from nnunet_ray.distributed.cv import SUMMARY_CSV, SUMMARY_JSON
from tests.training.conftest import build_tiny_task

pytestmark = pytest.mark.slow  # several Tune + Train trials: minutes on 2 cores

ROOT = Path(__file__).resolve().parents[2]
FOLDS = 5
TRAIN_FLAGS = ["--max-epochs", "2", "--min-epochs", "1", "--train-batches", "1", "--batch-size", "2",
               "--dali-threads", "1", "--warmup", "0", "--image-every", "0"]


def _cv(task: Path, results: Path, *extra: str) -> subprocess.Popen:
    """The CLI in its own process (and process session) with its own local 2-CPU cluster."""
    cmd = [sys.executable, "-m", "nnunet_ray.cli", "cv", "--data", str(task), "--results", str(results),
           "--dims", "3", "--folds", f"0-{FOLDS - 1}", "--name", "cv", *TRAIN_FLAGS, *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def _finished(experiment: Path) -> list[Path]:
    return sorted(experiment.glob("3d_fold*/summary.json"))


def _left_in_session(sid: int) -> list[str]:
    """The processes still running in session ``sid`` (the CLI's, and every Ray process it started)."""
    rows = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True).stdout.splitlines()
    return [row for row in rows if row.split()[0] == str(sid)]


@pytest.fixture(scope="module", params=["tune", "train"])
def killed_and_resumed(request, tmp_path_factory):
    """The experiment folder of a CV stopped after 2 finished trials and then resumed; the summaries of the trials
    finished before the stop, as they were at the stop; the resumed CLI's output. The tune-engine CV gets SIGTERM
    (what `timeout`, SLURM and Kubernetes send) and must stop cleanly; the Ray Train one is killed with SIGKILL."""
    engine = request.param
    root = tmp_path_factory.mktemp(f"cv_{engine}")
    task = build_tiny_task(root / "task", cases=6, folds=FOLDS)
    experiment = root / "results" / "cv"
    # A trial in a reused Tune actor trains 1 batch an epoch in ~0.3 s, faster than the kill below can react; at 30
    # batches it takes seconds, so the kill lands with trials still running (a Ray Train trial takes 15-40 s anyway).
    slower = ["--train-batches", "30"] if engine == "tune" else []
    first = _cv(task, root / "results", "--engine", engine, *slower)
    deadline = time.monotonic() + 400
    while len(_finished(experiment)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if engine == "tune":
        _sigterm_stops_cleanly(first)
    else:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    before = {p.parent.name: p.read_text() for p in _finished(experiment)}
    assert 2 <= len(before) < FOLDS, before.keys()
    second = _cv(task, root / "results", "--resume", *slower)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-4000:]
    return experiment, before, output, engine


def _sigterm_stops_cleanly(cli: subprocess.Popen) -> None:
    """SIGTERM mid-trial: exit 130 within 30 s, one last line saying what finished and how to continue, no stack
    dump, and no process of the CLI's session (its Ray cluster) left behind."""
    start = time.monotonic()
    cli.send_signal(signal.SIGTERM)
    output, _ = cli.communicate(timeout=60)
    assert time.monotonic() - start < 30 and cli.returncode == 130, (cli.returncode, output[-3000:])
    last = output.strip().splitlines()[-1]
    assert re.fullmatch(r"nnunet-ray cv: stopped with [234] of 5 trials finished; continue with --resume --name cv "
                        r"--results \S+", last), output[-3000:]
    assert "Traceback" not in output and "SIGTERM received" not in output and "Tuner.restore" not in output
    deadline = time.monotonic() + 10
    while _left_in_session(cli.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _left_in_session(cli.pid)


def test_cv_resumed_after_a_stop_reruns_no_finished_trial(killed_and_resumed):
    experiment, before, _, _ = killed_and_resumed
    assert len(_finished(experiment)) == FOLDS
    for name, text in before.items():
        assert (experiment / name / "summary.json").read_text() == text  # not trained again


def test_summary_equals_each_trials_best_reported_dice(killed_and_resumed):
    experiment, _, output, engine = killed_and_resumed
    table = pd.read_csv(experiment / SUMMARY_CSV, dtype={"fold": str})
    trials = table[~table["fold"].isin(["mean", "std"])]
    reported = _reported_dice(experiment, engine)
    assert sorted(trials["fold"]) == [str(f) for f in range(FOLDS)]
    for _, row in trials.iterrows():
        run = experiment / f"3d_fold{row['fold']}"
        assert row["dice_mean"] == pytest.approx(max(reported[run.name]))
        assert row["epochs"] == 2 and Path(row["best_checkpoint"]).is_dir()
        assert (run / "metrics.jsonl").is_file() and (run / "tensorboard").is_dir()
    mean = table[table["fold"] == "mean"].iloc[0]
    assert mean["dice_mean"] == pytest.approx(trials["dice_mean"].mean())
    summary = json.loads((experiment / SUMMARY_JSON).read_text())
    assert summary["per_dim"]["3d"]["mean"]["dice_mean"] == pytest.approx(mean["dice_mean"])
    assert "mean ± std" in output
    # The cost: device-hours per trial (1 CPU each, for its wall) and in all; the last line says it.
    assert (trials["device_hours"] > 0).all()
    assert summary["cost"]["device"] == "CPU" and 0 < summary["cost"]["training_share"] <= 1
    assert summary["cost"]["device_hours"] == pytest.approx(trials["device_hours"].sum())
    assert re.search(r"^5 trials in \d+ s wall, [0-9.]+ CPU-hours, training \d+% of the wall$", output, re.M)
    assert all(json.loads(p.read_text())["engine"] == engine for p in _finished(experiment))


def _reported_dice(experiment: Path, engine: str) -> dict[str, list[float]]:
    """Each trial's Dice as Ray registered it with its kept checkpoints (Tune's own result.json may have lost
    lines buffered at the SIGKILL): Ray Train's run snapshot, or Tune's experiment state."""
    if engine == "train":
        return {run.name: [m["dice_mean"] for _, m in ray.train.Result.from_path(str(run)).best_checkpoints]
                for run in experiment.glob("3d_fold*")}
    grid = ray.tune.ResultGrid(ray.tune.ExperimentAnalysis(str(experiment)))
    return {Path(r.path).name: [m["dice_mean"] for _, m in r.best_checkpoints] for r in grid}


def test_never_more_trials_at_once_than_the_cluster_holds(killed_and_resumed):
    experiment, _, _, engine = killed_and_resumed
    most = _most_at_once([json.loads(p.read_text()) for p in _finished(experiment)])
    # Trials of 1 CPU on 2 CPUs: Tune places two at a time by their declared resources (nothing computed by the
    # project); Ray Train trials are capped from the cluster's CPUs.
    assert most == 2 if engine == "tune" else most <= 2


def _most_at_once(spans: list[dict]) -> int:
    events = sorted([(s["started_at"], 1) for s in spans] + [(s["finished_at"], -1) for s in spans],
                    key=lambda e: (e[0], e[1]))
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_every_trial_has_hparams_and_scalars(killed_and_resumed):
    experiment, _, _, _ = killed_and_resumed
    for fold in range(FOLDS):
        acc = EventAccumulator(str(experiment / f"3d_fold{fold}" / "tensorboard"))
        acc.Reload()
        assert "val/dice_mean" in acc.Tags()["scalars"]
        hparams = acc.PluginTagToContent("hparams")
        assert "_hparams_/session_start_info" in hparams


def test_a_resume_with_a_changed_training_option_is_refused(killed_and_resumed, capsys):
    experiment = killed_and_resumed[0]
    task = next((experiment.parents[1] / "task" / "preprocessed").glob("*/3d"))
    finished = {p: p.read_text() for p in _finished(experiment)}
    argv = ["cv", "--data", str(task), "--results", str(experiment.parent), "--name", "cv", "--resume",
            "--max-epochs", "5", "--min-epochs", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-epochs 5 (the experiment's: 2)" in err[0], err
    assert "--min-epochs" not in err[0]  # given with the experiment's own value: not a change
    assert {p: p.read_text() for p in _finished(experiment)} == finished
