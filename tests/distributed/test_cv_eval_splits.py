"""`evaluate --cv` scores each run on the folds it was trained on, or refuses (no Ray is started for that)."""

from __future__ import annotations

import re

import pytest

from nnunet_ray.cli import main
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import kfold_splits, save_splits, splits_hash
from nnunet_ray.runs.run_config import record_splits_hash
from tests.inference.conftest import save_random_checkpoint, tiny_plans

OTHER = "0123456789abcdef"  # the hash of folds that are not in splits.json any more


@pytest.mark.parametrize("recorded, message", [
    # Every run trained on folds that a `preprocess --new-splits` has replaced since: its "validation" cases in the
    # new file may be cases it trained on.
    ((OTHER, OTHER), rf"--cv: run Task99_Synth_3d_fold0 was trained on other folds \(splits hash {OTHER}\) than "
                     r".*splits.json holds now"),
    ((None, OTHER), r"--cv: Task99_Synth_3d_fold1 was trained on other folds .* than Task99_Synth_3d_fold0"),
])
def test_runs_trained_on_other_folds_are_refused_in_one_line(tmp_path, synth_task, capsys, recorded, message):
    pre = tmp_path / "pre" / "3d"
    splits = kfold_splits([c.case_id for c in load_dataset(synth_task).training], n_splits=3)
    save_splits(pre, splits)
    experiment = tmp_path / "results" / "cv"
    for fold, stamp in enumerate(recorded):
        checkpoint = save_random_checkpoint(experiment / f"Task99_Synth_3d_fold{fold}" / "epoch_0001",
                                            tiny_plans(synth_task, 3), fold=fold, data=str(pre))
        record_splits_hash(checkpoint, stamp or splits_hash(splits))
    assert main(["evaluate", "--cv", str(experiment), "--data", str(synth_task)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]  # the rest is the progress log
    assert len(errors) == 1 and errors[0].startswith("nnunet-ray evaluate: error: ") and "Traceback" not in err
    assert re.search(message, errors[0]), errors[0]
    assert not (experiment / "cv_predictions").exists()
