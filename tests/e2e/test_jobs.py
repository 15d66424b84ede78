"""The `jobs/` entry points as users run them: copied alone to an empty folder (the launcher's `ray submit`), and
submitted to a real cluster started with `ray start --head` through the real job API (`ray job submit`)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from nnunet_ray.config import SynthConfig
from nnunet_ray.data import storage
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.local_clusters import local_head, submit_job, training_seconds
from nnunet_ray.runs.summary import RunSummary, save_summary
from tests.distributed.test_s3_storage import S3StandIn

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "jobs").glob("*.py"))
FIVE_FOLD, SWEEP, PREDICT = (ROOT / "jobs" / name for name in ("five_fold.py", "sweep.py", "predict.py"))


def _alone(script: Path, folder: Path) -> Path:
    """``script`` copied into an otherwise empty ``folder``: no repository next to it or on the path."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(script, folder / script.name))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}


@pytest.mark.parametrize("script", JOBS, ids=lambda p: p.name)
def test_job_script_needs_only_the_installed_package(script, tmp_path):
    copy = _alone(script, tmp_path / "job")
    result = subprocess.run([sys.executable, str(copy), "--help"], cwd=tmp_path / "job", env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout and "nnunet_ray" not in result.stderr


def test_five_fold_without_data_is_one_line_error(tmp_path):
    copy = _alone(ROOT / "jobs" / "five_fold.py", tmp_path / "job")
    result = subprocess.run([sys.executable, str(copy), "--results", str(tmp_path / "r")], cwd=tmp_path / "job",
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == ("five_fold: error: --data is required (a raw dataset "
                                                      "folder), unless --smoke-test")


@pytest.fixture(scope="module")
def ray_head():
    """One real `ray start --head` cluster (2 CPUs, dashboard + job server) for this module's jobs, stopped after
    them even when a test fails."""
    with local_head() as (address, env):
        yield address, env


@pytest.mark.slow
def test_five_fold_smoke_job_through_ray_job_submit(ray_head, tmp_path):
    address, env = ray_head
    results = tmp_path / "results"
    submit, seconds = submit_job(address, env, FIVE_FOLD, tmp_path / "job", ["--smoke-test", "--results", str(results)])
    assert submit.returncode == 0 and "succeeded" in submit.stdout, submit.stdout[-4000:] + submit.stderr[-2000:]
    print(f"ray job submit -> SUCCEEDED in {seconds:.0f} s (results on a local path)")
    assert "(raylet)" not in submit.stdout + submit.stderr  # e.g. its worker start-up concurrency warning
    experiment = results / "Task99_Synthetic_five_fold"
    summary = json.loads((experiment / "cv_summary.json").read_text())
    assert summary, "empty CV summary"
    assert (experiment / "cv_original_space.csv").is_file()
    predictions = sorted((experiment / "test_predictions").glob("*.nii.gz"))
    assert [p.name for p in predictions] == ["synth_010.nii.gz", "synth_011.nii.gz"]
    events = list(experiment.rglob("events.out.tfevents.*"))
    assert len({e.parent.parent for e in events}) >= 2, "TensorBoard events for every trial"


@pytest.mark.slow
def test_sweep_then_cv_job_and_the_predict_job_on_its_models_through_ray_job_submit(ray_head, tmp_path):
    """jobs/sweep.py (default learning-rate sweep, --then-cv on the best) and jobs/predict.py (the CV experiment's
    fold models on the test images, scored with --labels), each submitted as users do."""
    address, env = ray_head
    results = tmp_path / "results"
    sweep, seconds = submit_job(address, env, SWEEP, tmp_path / "sweep_job",
                                ["--smoke-test", "--results", str(results), "--num-samples", "2", "--then-cv"])
    assert sweep.returncode == 0 and "succeeded" in sweep.stdout, sweep.stdout[-4000:] + sweep.stderr[-2000:]
    print(f"sweep job -> SUCCEEDED in {seconds:.0f} s")
    best = json.loads((results / "Task99_Synthetic_sweep" / "best_config.json").read_text())
    assert set(best) == {"learning_rate"} and 1e-4 <= best["learning_rate"] <= 1e-2  # RAdam's default range
    assert (results / "Task99_Synthetic_sweep" / "tune_results.csv").is_file()
    cv = results / "Task99_Synthetic_sweep_best_cv"
    trials = json.loads((cv / "cv_summary.json").read_text())["trials"]
    assert sorted(str(t["fold"]) for t in trials if t["dim"] == "3d") == ["0", "1"]  # the smoke test's folds
    assert json.loads((cv / "3d_fold0" / "epoch_0000" / "config.json").read_text())["learning_rate"] == \
        pytest.approx(best["learning_rate"])  # the folds trained with the sweep's best value
    raw, out = results / "raw" / "Task99_Synthetic", tmp_path / "predictions"
    predict, _ = submit_job(address, env, PREDICT, tmp_path / "predict_job",
                            ["--models", str(cv), "--input", str(raw), "--out", str(out),
                             "--labels", str(raw / "labelsTs")])
    assert predict.returncode == 0 and "succeeded" in predict.stdout, predict.stdout[-4000:] + predict.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["synth_010.nii.gz", "synth_011.nii.gz"]
    members = json.loads((out / "predict.json").read_text())["members"]
    assert len(members) == 2  # both folds' best checkpoints
    assert json.loads((out / "summary.json").read_text())  # scored by the job's evaluate step


JOB_LINES = ("== ", "cross-validation summary:", "original-space evaluation:", "test predictions:", "compare folds:")


def _bucket_files(location: str) -> list[str]:
    """Every object under ``location``, relative to it."""
    fs, root = storage.resolve(location)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(i.path[len(root) + 1:] for i in infos if i.type == pafs.FileType.File)


def _kept_by_ray(path: Path | None, line: str) -> bool:
    """What Ray itself records of what a job was given: its echo of the submitted command line (the first line of
    the job's log, which `ray job submit` tails) and each node's runtime-env agent log of the job's runtime
    environment (where the credentials travel to the workers of a cluster the job joins)."""
    return line.startswith("Running entrypoint for job ") or (path is not None and path.name == "runtime_env_agent.log")


def _secret_holders(secret: str, submits: list[subprocess.CompletedProcess], bucket: str,
                    folders: list[Path]) -> list[str]:
    """Where ``secret`` appears, but for ``_kept_by_ray``: lines of the submits' stdout/stderr, objects of the whole
    bucket, lines of the files under the local ``folders``."""
    found = [f"output: {line}" for submit in submits for line in (submit.stdout + submit.stderr).splitlines()
             if secret in line and not _kept_by_ray(None, line)]
    found += [f"object: {name}" for name in _bucket_files(bucket)
              if secret.encode() in storage.read_bytes(storage.join(bucket, name))]
    for path in (p for folder in folders for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        with contextlib.suppress(OSError):  # another test's file vanishing under the walk
            data = path.read_bytes()
            lines = data.decode("utf-8", "replace").splitlines() if secret.encode() in data else []
            found += [f"file: {path}" for line in lines if secret in line and not _kept_by_ray(path, line)][:1]
    return found


def _ray_session(submit: subprocess.CompletedProcess) -> Path:
    """The session folder of the cluster that ran the job `ray job submit` printed."""
    job = re.search(r"raysubmit_\w+", submit.stdout).group(0)
    ray_tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray")
    return next(ray_tmp.glob(f"session_2*/logs/job-driver-{job}.log")).parents[1]  # not session_latest


@pytest.fixture(scope="module")
def keyed_s3():
    """An S3 stand-in that refuses every request not signed with the access key AKIAJOBTEST."""
    server = S3StandIn(key="AKIAJOBTEST")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_five_fold_smoke_job_on_s3_and_its_resume(ray_head, keyed_s3, tmp_path):
    """The job on an ``s3://KEY:SECRET@...`` root: the credentials go to the environment of the job's driver and,
    as the job's runtime environment, to its workers (the store refuses any other signer); the secret then appears
    in no object of the bucket, no local file (the job's working folder, the smoke task, staging, every nnunet_ray_*
    temporary folder, the cluster's session folder) and no printed line, but where Ray keeps what the job was given
    (``_kept_by_ray``)."""
    address, env = ray_head
    secret = f"jobs-s3cr3t-{uuid.uuid4().hex[:8]}"
    results = keyed_s3.new_root(secret)  # the endpoint and the credentials travel in the URI
    args = ["--smoke-test", "--results", results]
    submit, seconds = submit_job(address, env, FIVE_FOLD, tmp_path / "job", args)
    assert submit.returncode == 0 and "succeeded" in submit.stdout, submit.stdout[-4000:] + submit.stderr[-2000:]
    print(f"ray job submit -> SUCCEEDED in {seconds:.0f} s (results on s3://, moto)")
    own = [line for line in submit.stdout.splitlines() if line.startswith(JOB_LINES)]
    assert own and not [line for line in own if "AKIAJOBTEST" in line], own
    experiment = storage.join(results, "Task99_Synthetic_five_fold")
    files = _bucket_files(experiment)
    for trial in ("3d_fold0", "3d_fold1"):
        assert f"{trial}/epoch_0000/model.pt" in files and f"{trial}/metrics.jsonl" in files
        assert any(f.startswith(f"{trial}/tensorboard/events.out.tfevents") for f in files)
    assert {"cv_summary.csv", "cv_original_space.csv", "best_configuration.json",
            "test_predictions/synth_010.nii.gz", "test_predictions/synth_011.nii.gz"} <= set(files)
    trained = {t: storage.read_bytes(storage.join(experiment, t, "summary.json")) for t in ("3d_fold0", "3d_fold1")}

    resumed, seconds = submit_job(address, env, FIVE_FOLD, tmp_path / "job", [*args, "--resume"])
    assert resumed.returncode == 0 and "succeeded" in resumed.stdout, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    print(f"resumed job -> SUCCEEDED in {seconds:.0f} s")
    for trial, summary in trained.items():
        assert storage.read_bytes(storage.join(experiment, trial, "summary.json")) == summary, f"{trial} retrained"
    assert "0 predicted, 2 already done" in resumed.stdout  # the test predictions found in the bucket

    temporary = [p for p in Path(tempfile.gettempdir()).glob("nnunet_ray_*") if p.is_dir()]  # stage, smoke task...
    assert not _secret_holders(secret, [submit, resumed], storage.parent(storage.parent(experiment)),
                               [tmp_path, *temporary, _ray_session(submit)])


def test_training_seconds_is_the_union_of_the_trials_fit_intervals(tmp_path):
    trials = {"3d_fold0": (110.0, 10.0), "3d_fold1": (120.0, 15.0), "3d_fold2": (135.0, 5.0)}  # finished, seconds
    for name, (finished, seconds) in trials.items():
        save_summary(tmp_path / name, RunSummary(name=name, run_dir=str(tmp_path / name), best_checkpoint=None,
                                                 last_checkpoint=None, finished_at=finished, seconds_in_worker=seconds))
    (tmp_path / "summary.json").write_text(json.dumps({"cases": 2}))  # an evaluation's summary: no run, passed over
    assert training_seconds(tmp_path) == pytest.approx(20.0 + 5.0)  # [100, 120] and [130, 135]


def _five_fold_steps(monkeypatch) -> tuple[object, list[list[str]]]:
    """The five-fold job's module, its steps recorded instead of run."""
    spec = importlib.util.spec_from_file_location("five_fold_job", ROOT / "jobs" / "five_fold.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    steps: list[list[str]] = []
    monkeypatch.setattr(job, "run_step", lambda title, argv: steps.append(argv))
    return job, steps


def test_five_fold_passes_a_raw_data_uri_to_every_step_untouched(synth_task, s3_root, tmp_path, monkeypatch):
    """Each step's command line as the job builds it (the steps themselves are the commands' own tests)."""
    job, steps = _five_fold_steps(monkeypatch)
    raw = storage.join(s3_root, "raw", synth_task.name)
    storage.upload(synth_task, raw)
    assert job.main(["--data", raw, "--results", str(tmp_path / "r")]) == 0
    experiment, predictions = (str(tmp_path / "r" / "Task99_Synth_five_fold"),
                               str(tmp_path / "r" / "Task99_Synth_five_fold" / "test_predictions"))
    assert [argv[:5] for argv in steps] == [
        ["cv", "--data", raw, "--results", str(tmp_path / "r")],
        ["evaluate", "--cv", experiment, "--data", raw],
        ["predict", "--models", experiment, "--input", raw],
        ["evaluate", "--preds", predictions, "--labels", storage.join(raw, "labelsTs")]]


def test_five_fold_on_a_dataset_without_test_images_ends_after_the_evaluation(tmp_path, monkeypatch, capsys):
    raw = make_synthetic_task(SynthConfig(out=str(tmp_path / "Task98_NoTest"), cases=4, test=0, size=16))
    job, steps = _five_fold_steps(monkeypatch)
    assert job.main(["--data", str(raw), "--results", str(tmp_path / "r")]) == 0
    assert [argv[:2] for argv in steps] == [["cv", "--data"], ["evaluate", "--cv"]]
    out = capsys.readouterr().out
    assert "== predict: skipped: the dataset lists no test images" in out and "test predictions:" not in out
