"""Reruns of `preprocess` that cannot go stale or reshuffle folds, and case workers killed mid-case (real Ray Data)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.cli import main
from nnunet_ray.config import PreprocessConfig, RunError, SynthConfig
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import kfold_splits, save_splits
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed import case_pool
from nnunet_ray.distributed.preprocess import preprocess_dataset
from nnunet_ray.planning.fingerprint import case_fingerprint, merge_fingerprints
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import save_plans
from nnunet_ray.preprocessing.case import preprocess_case


def _task(tmp_path, cases: int = 4):
    raw = tmp_path / "raw" / "Task95_Reruns"
    make_synthetic_task(SynthConfig(out=str(raw), cases=cases, test=0, size=24, seed=4))
    return raw, [c.case_id for c in load_dataset(raw).training], tmp_path / "pre"


def _preprocess(raw, results, *extra: str) -> int:
    return main(["preprocess", "--data", str(raw), "--results", str(results), "--dim", "3", *extra])


def _splits(results, raw):
    return json.loads((results / raw.name / "3d" / "splits.json").read_text())


def _correct_label(raw, case_id) -> None:
    """Rewrite a raw label as a correction would: class 1 becomes class 2."""
    label = raw / "labelsTr" / f"{case_id}.nii.gz"
    img = nib.load(str(label))
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.where(data == 1, 2, data).astype(np.uint8), img.affine, img.header), str(label))


def _plan_in_process(raw, results):
    """plans.json as `preprocess` would plan it, without a Ray Data run (the test's time goes to the reruns)."""
    dataset = load_dataset(raw)
    plans = make_plans(dataset, merge_fingerprints(dataset, [case_fingerprint(c) for c in dataset.training]), dim=3)
    save_plans(str(results / raw.name / "3d"), plans)
    return plans


def test_reruns_redo_changed_raw_files_and_never_reshuffle_folds(tmp_path, capsys):
    raw, ids, results = _task(tmp_path, cases=5)
    plans, out = _plan_in_process(raw, results), results / raw.name / "3d"
    # What an earlier run left when ids[2] failed (its label was missing then): four cases and folds over them
    # (written in-process, as preprocess_dataset does it, to spare a Ray Data run).
    for case in load_dataset(raw).training:
        if case.case_id != ids[2]:
            assert preprocess_case(case, plans, out)["status"] == "done"
    four = kfold_splits([c for c in ids if c != ids[2]], n_splits=4)
    save_splits(out, four)
    # ids[2] now succeeds: folds over five cases would reshuffle every fold runs were trained on.
    assert _preprocess(raw, results) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]  # the rest is the per-case progress log
    assert len(errors) == 1 and errors[0].startswith("nnunet-ray preprocess: error: ") and "Traceback" not in err
    assert f"not in any fold: {ids[2]}" in errors[0] and "--new-splits" in errors[0] and "--splits FILE" in errors[0]
    assert _splits(results, raw) == four
    # A corrected label: that case is redone and said so; --new-splits makes the folds over all five.
    _correct_label(raw, ids[1])
    assert _preprocess(raw, results, "--new-splits") == 0
    printed = capsys.readouterr().out
    assert f"0 preprocessed, 1 reprocessed (raw files changed), {len(ids) - 1} already done, 0 failed" in printed
    assert json.loads(printed.strip().splitlines()[-1])["reprocessed"] == 1
    y = np.load(out / f"{ids[1]}_y.npy")
    assert 1 not in np.unique(y) and 2 in np.unique(y)
    assert _splits(results, raw) == kfold_splits(ids, n_splits=5)
    # A case removed from dataset.json: refused before any case work, naming it.
    dataset_json = raw / "dataset.json"
    meta = json.loads(dataset_json.read_text())
    meta["training"] = [c for c in meta["training"] if ids[0] not in c["image"]]
    meta["numTraining"] = len(meta["training"])
    dataset_json.write_text(json.dumps(meta))
    assert _preprocess(raw, results) == 2
    captured = capsys.readouterr()
    assert f"no longer a case: {ids[0]}" in captured.err and "[1/" not in captured.err


def test_a_case_worker_killed_mid_case_is_retried_and_every_case_finishes(tmp_path, caplog):
    raw, ids, results = _task(tmp_path)
    _plan_in_process(raw, results)
    marker = tmp_path / "killed"
    cfg = PreprocessConfig(data=str(raw), results=str(results), dim=3, case_workers=2)
    summary = preprocess_dataset(cfg, faults={"kill_case": ids[2], "kill_marker": str(marker)})
    assert marker.exists(), "the fault was not injected"
    assert summary.ok and sorted(summary.finished) == ids
    assert "a case worker died" in caplog.text
    out = results / raw.name / "3d"
    for case_id in ids:
        props = json.loads((out / f"{case_id}.json").read_text())
        assert np.load(out / f"{case_id}_x.npy").shape[1:] == tuple(props["shape"])
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert _splits(results, raw) == kfold_splits(ids, n_splits=4)


def test_workers_dying_in_every_attempt_end_in_one_line(tmp_path, monkeypatch):
    raw, ids, results = _task(tmp_path)
    _plan_in_process(raw, results)
    monkeypatch.setattr(case_pool, "CASE_ATTEMPTS", 1)
    cfg = PreprocessConfig(data=str(raw), results=str(results), dim=3, case_workers=1)
    with pytest.raises(RunError, match=r"case workers died in 1 attempt\(s\) .*rerun to continue") as err:
        preprocess_dataset(cfg, faults={"kill_case": ids[0], "kill_marker": str(tmp_path / "killed")})
    assert "\n" not in str(err.value)
