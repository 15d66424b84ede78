"""The five-fold smoke job on an autoscaling cluster that starts empty (Ray's autoscaler with its fake multi-node
provider, shaped like cluster.yaml: a 0-CPU head holding the driver resource, one worker type with min_workers 0 and
max_workers 2), submitted with `ray job submit`: it finishes, two folds train at once on two autoscaled nodes, and
no driver runs on a worker node. The cluster is stopped even when the test fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunet_ray.distributed.fake_autoscaling import fake_autoscaling_head, run_smoke_job, state_api

pytestmark = pytest.mark.slow
FIVE_FOLD = Path(__file__).resolve().parents[2] / "jobs" / "five_fold.py"


def test_the_smoke_job_grows_an_empty_cluster_and_keeps_drivers_on_the_head(tmp_path):
    with fake_autoscaling_head(tmp_path / "home") as head:
        result = run_smoke_job(head, tmp_path, FIVE_FOLD)
        nodes, actors = state_api(head, "nodes"), state_api(head, "actors")
    submit = result["submit"]
    assert submit.returncode == 0 and "succeeded" in submit.stdout, submit.stdout[-4000:] + submit.stderr[-2000:]
    print(f"submit -> SUCCEEDED {result['seconds']:.0f} s; second node after {result['second_node_s']} s; "
          f"peak {result['peak_nodes']} worker nodes; training {result['training_share']:.0%} of the wall")
    assert result["samples"][0][1] == 0 and result["peak_nodes"] == 2  # from no worker to both
    experiment = tmp_path / "results" / "Task99_Synthetic_five_fold"
    folds = [json.loads((experiment / f"3d_fold{f}" / "summary.json").read_text()) for f in (0, 1)]
    head_id = next(n["node_id"] for n in nodes if n["is_head_node"])
    assert {f["engine"] for f in folds} == {"tune"} and len({f["node_id"] for f in folds} - {head_id}) == 2
    first, second = sorted(folds, key=lambda f: f["started_at"])
    assert second["started_at"] < first["finished_at"]  # the two folds trained at the same time
    drivers = [a for a in actors if a["class_name"] in ("JobSupervisor", "TrainController")]
    assert drivers and all(a["node_id"] == head_id for a in drivers), drivers
    assert (experiment / "cv_original_space.csv").is_file()
    assert sorted(p.name for p in (experiment / "test_predictions").glob("*.nii.gz")) == [
        "synth_010.nii.gz", "synth_011.nii.gz"]
