"""`nnunet-ray evaluate --cv`: every fold's validation cases predicted from the raw images and scored there."""

from __future__ import annotations

import csv
import json

import pytest
import ray
from ray.util.state import list_actors

from nnunet_ray.cli import main
from nnunet_ray.config import ConfigError, PredictConfig
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import kfold_splits, save_splits
from nnunet_ray.distributed.predict import postprocess_classes
from nnunet_ray.inference.members import find_checkpoints
from tests.inference.conftest import save_random_checkpoint, tiny_plans


def test_cv_in_original_space_writes_numbers_for_every_fold(tmp_path, synth_task, capsys):
    # A finished tiny CV: a preprocessed folder's splits.json and, per fold, a run holding its best checkpoint.
    pre = tmp_path / "pre" / "3d"
    ids = [c.case_id for c in load_dataset(synth_task).training]
    save_splits(pre, kfold_splits(ids, n_splits=3))
    experiment = tmp_path / "results" / "cv"
    for dim, fold in ((3, 0), (3, 1), (2, 0)):
        save_random_checkpoint(experiment / f"Task99_Synth_{dim}d_fold{fold}" / "epoch_0003",
                               tiny_plans(synth_task, dim), seed=fold, fold=fold, data=str(pre),
                               progress={"epoch": 3, "best_epoch": 3, "best_dice": 0.5 + fold / 10})

    before = _prediction_actors()
    assert main(["evaluate", "--cv", str(experiment), "--data", str(synth_task), "--actors", "2"]) == 0
    # One pool of 2 actors for the 3 runs (each actor holding every fold's network), not a pool per run.
    assert len(_prediction_actors() - before) == 2
    result = json.loads((experiment / "cv_original_space.json").read_text())
    assert [(r["run"], r["fold"], r["cases"]) for r in result["runs"]] == [
        ("Task99_Synth_2d_fold0", 0, 2), ("Task99_Synth_3d_fold0", 0, 2), ("Task99_Synth_3d_fold1", 1, 2)]
    assert [r["training_dice"] for r in result["runs"]] == [0.5, 0.5, 0.6]
    assert all(0 <= r["dice"] <= 1 and r["hd95"] >= 0 and 0 <= r["nsd"] <= 1 for r in result["runs"])
    assert result["configurations"]["3d"]["folds"] == 2 and result["configurations"]["2d"]["folds"] == 1
    for run in result["runs"]:
        predicted = sorted(p.name for p in (experiment / "cv_predictions" / run["run"]).glob("*.nii.gz"))
        assert predicted == sorted(f"{i}.nii.gz" for i in kfold_splits(ids, n_splits=3)[run["fold"]]["val"])
    rows = list(csv.DictReader((experiment / "cv_original_space.csv").open()))
    assert [r["fold"] for r in rows] == ["0", "0", "1"]
    assert "mean 3d" in capsys.readouterr().out

    # The best configuration: 2D, 3D and their ensemble compared on the CV cases; predict follows the choice.
    best = json.loads((experiment / "best_configuration.json").read_text())
    assert set(best["mean_dice"]) == {"2d", "3d", "2d+3d"}
    assert best["mean_dice"][best["configuration"]] == max(best["mean_dice"].values())
    assert set(best["largest_component"]) <= {1, 2, 3}
    members = find_checkpoints([experiment])
    assert {json.loads((m / "plans.json").read_text())["dim"] for m in members} == set(best["dims"])
    cfg = PredictConfig(models=(str(experiment),), input=str(synth_task), out=str(tmp_path / "p"), postprocess=True)
    assert postprocess_classes(cfg) == best["largest_component"]


def _prediction_actors() -> set[str]:
    """Ids of every prediction actor the cluster has created, alive or dead."""
    # The connected cluster's address: other clusters on this machine (a test's `ray start`) may be newer.
    actors = list_actors(address=ray.get_runtime_context().gcs_address, limit=10000, raise_on_missing_output=False,
                         filters=[("class_name", "=", "PredictActor")])
    return {a.actor_id for a in actors}


def test_cv_needs_the_raw_dataset(tmp_path, capsys):
    assert main(["evaluate", "--cv", str(tmp_path)]) == 2
    assert "--data: is required with --cv" in capsys.readouterr().err


def test_postprocess_needs_a_chosen_configuration(tmp_path):
    cfg = PredictConfig(models=(str(tmp_path),), input="i", out="o", postprocess=True)
    with pytest.raises(ConfigError, match="--postprocess: no --models folder holds a best_configuration.json"):
        postprocess_classes(cfg)
