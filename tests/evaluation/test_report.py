"""`nnunet-ray evaluate`: folder pairing, geometry checks, summary.json / summary.csv, the printed table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nnunet_ray.cli import main
from nnunet_ray.data.nifti import write_nifti
from nnunet_ray.data.types import CaseError, DatasetError
from nnunet_ray.evaluation.report import evaluate_folders, summary_table

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])  # voxel (x, y, z) -> mm: spacing (z, y, x) = (2.5, 0.8, 0.8)


def _cube(shape=(6, 10, 12), box=(slice(1, 4), slice(2, 7), slice(3, 9)), cls=1) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[box] = cls
    return label


def _folders(tmp_path, pairs):
    preds, labels = tmp_path / "preds", tmp_path / "labels"
    for case_id, (pred, label, *affine) in pairs.items():
        write_nifti(pred, affine[0] if affine else AFFINE, preds / f"{case_id}.nii.gz")
        write_nifti(label, AFFINE, labels / f"{case_id}.nii.gz")
    return preds, labels


def test_summary_files_and_means(tmp_path):
    label = _cube()
    label[4, 8, 10] = 2
    shifted = np.roll(label, 1, axis=0)  # one slice (2.5 mm) off
    preds, labels = _folders(tmp_path, {"a": (label, label), "b": (shifted, label)})
    summary = evaluate_folders(preds, labels, tolerance=1.0)
    assert summary["classes"] == {"1": "1", "2": "2"} and summary["n_cases"] == 2
    a, b = (c["metrics"] for c in summary["cases"])
    assert a["1"] == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    assert b["1"]["dice"] == pytest.approx(2 * 60 / 180) and b["1"]["hd95"] == pytest.approx(2.5)
    assert summary["per_class"]["1"]["dice"] == pytest.approx((1 + 2 * 60 / 180) / 2)
    assert summary["mean"]["dice"] == pytest.approx(np.mean([summary["per_class"][c]["dice"] for c in "12"]))
    assert json.loads((preds / "summary.json").read_text())["n_cases"] == 2
    rows = list(csv.reader((preds / "summary.csv").open()))
    assert rows[0] == ["case_id", "class", "dice", "hd95_mm", "nsd"] and len(rows) == 1 + 4 + 2 + 1
    assert rows[-1][:2] == ["mean", "all"]
    table = summary_table(summary)
    assert "HD95 mm" in table and table.splitlines()[-2].startswith("mean")


def test_class_names_come_from_predict_json(tmp_path):
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube())})
    (preds / "predict.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ", "2": "lesion"}}))
    summary = evaluate_folders(preds, labels, out=tmp_path / "report")
    assert list(summary["per_class"]) == ["organ", "lesion"]
    assert summary["per_class"]["lesion"] == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}  # absent from both
    assert (tmp_path / "report" / "summary.csv").is_file()


def test_a_class_only_a_prediction_holds_scores_as_a_false_positive(tmp_path):
    """Another tool's predictions (no predict.json): the classes are the highest value in labels or predictions."""
    pred = _cube()
    pred[5, 0, 0] = 2  # a voxel of class 2, which no reference label holds
    preds, labels = _folders(tmp_path, {"a": (pred, _cube())})
    (preds / "predict.json").write_text("{cut short")  # damaged: warned about, then the label maps decide
    summary = evaluate_folders(preds, labels)
    assert summary["classes"] == {"1": "1", "2": "2"}
    assert summary["cases"][0]["metrics"]["2"]["dice"] == 0.0 and summary["cases"][0]["metrics"]["1"]["dice"] == 1.0


def test_shape_mismatch_names_the_case(tmp_path):
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube()), "b": (_cube((6, 10, 11)), _cube())})
    with pytest.raises(CaseError, match=r"^b: prediction shape \(11, 10, 6\) != label shape \(12, 10, 6\)"):
        evaluate_folders(preds, labels)


def test_affine_mismatch_is_one_line_from_the_cli(tmp_path, capsys):
    moved = AFFINE.copy()
    moved[0, 3] = 5.0
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube(), moved)})
    assert main(["evaluate", "--preds", str(preds), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nnunet-ray evaluate: error: a: prediction affine differs from the label's (max difference 5)"]


def test_missing_label_names_the_case(tmp_path):
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube())})
    (labels / "a.nii.gz").unlink()
    with pytest.raises(CaseError, match="^a: no label file"):
        evaluate_folders(preds, labels)


def test_cli_prints_the_table(tmp_path, capsys):
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube())})
    assert main(["evaluate", "--preds", str(preds), "--labels", str(labels), "--nsd-tolerance", "2"]) == 0
    out = capsys.readouterr().out
    assert "NSD@2mm" in out and "(1 cases)" in out


def test_labels_without_a_prediction_are_an_error_listing_them(tmp_path, capsys):
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube())})
    for case_id in ("b", "c", "d", "e", "f", "g"):
        write_nifti(_cube(), AFFINE, labels / f"{case_id}.nii.gz")
    argv = ["evaluate", "--preds", str(preds), "--labels", str(labels)]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"nnunet-ray evaluate: error: --preds: 6 label(s) in {labels} have no prediction in {preds}: b, c, d, e, f, "
        "... (--allow-missing scores the 1 that have one)"]
    assert not (preds / "summary.json").exists()

    assert main([*argv, "--allow-missing"]) == 0
    assert "(1 cases; 6 label(s) without a prediction not scored: b, c, d, e, f, ...)" in capsys.readouterr().out
    summary = json.loads((preds / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["n_missing"] == 6 and summary["missing"][0] == "b"


def test_scoring_named_cases_ignores_the_other_labels(tmp_path):
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube()), "b": (_cube(), _cube())})
    write_nifti(_cube(), AFFINE, labels / "other_fold.nii.gz")
    (preds / "b.nii.gz").unlink()
    summary = evaluate_folders(preds, labels, cases=["a"])
    assert summary["n_cases"] == 1 and summary["n_missing"] == 0
    with pytest.raises(DatasetError, match=r"^--preds: 1 label\(s\) .* no prediction .*: b \("):
        evaluate_folders(preds, labels, cases=["a", "b"])


def _garbage(path):
    path.write_bytes(b"\x1f\x8b not gzip data")


def _truncated(path):
    path.write_bytes(path.read_bytes()[:-30])  # the header reads; the voxels and the gzip trailer do not


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
@pytest.mark.parametrize("side", ["prediction", "label"])
def test_an_unreadable_file_is_one_line_naming_which_side(tmp_path, capsys, damage, side):
    preds, labels = _folders(tmp_path, {"a": (_cube(), _cube())})
    damage((preds if side == "prediction" else labels) / "a.nii.gz")
    assert main(["evaluate", "--preds", str(preds), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnunet-ray evaluate: error: a: cannot read {side} a.nii.gz "
                                               "(corrupt or truncated?): ")


def test_allow_missing_goes_with_preds_not_cv(capsys):
    assert main(["evaluate", "--cv", "x", "--data", "y", "--allow-missing"]) == 2
    assert "error: --allow-missing: goes with --preds / --labels" in capsys.readouterr().err



@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--cv", "x", "--data", "y", "--out", "z"], "--out: goes without --cv"),
    (["evaluate", "--cv", "x", "--data", "y", "--preds", "p"], "--preds: goes without --cv"),
    (["evaluate", "--preds", "p", "--labels", "l", "--data", "d"], "--data: goes with --cv"),
    (["evaluate", "--preds", "p", "--labels", "l", "--actors", "2"], "--actors: goes with --cv"),
])
def test_options_of_the_other_mode_are_refused_not_ignored(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnunet-ray evaluate: error: {message}")
