"""``labels_by_case_id``: label files named as dataset.json names them, seen under their case ids."""

from __future__ import annotations

import numpy as np

from nnunet_ray.data.local_views import labels_by_case_id
from nnunet_ray.data.nifti import write_nifti
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.evaluation.report import evaluate_folders
from tests.evaluation.test_report import AFFINE, _cube


def test_labels_named_otherwise_pair_with_predictions_by_case_id(tmp_path):
    label = _cube()
    write_nifti(label, AFFINE, tmp_path / "segs" / "a_seg.nii.gz")
    write_nifti(label, AFFINE, tmp_path / "segs" / "b_mask.nii")
    for case_id in "ab":
        write_nifti(label, AFFINE, tmp_path / "preds" / f"{case_id}.nii.gz")
    cases = [CaseFiles("a", (), label=tmp_path / "segs" / "a_seg.nii.gz"),
             CaseFiles("b", (), label=tmp_path / "segs" / "b_mask.nii"), CaseFiles("test", ())]
    with labels_by_case_id(cases) as folder:
        assert sorted(p.name for p in folder.iterdir()) == ["a.nii.gz", "b.nii"]
        summary = evaluate_folders(tmp_path / "preds", folder, out=tmp_path / "out")
    assert not folder.exists() and (tmp_path / "segs" / "a_seg.nii.gz").is_file()  # links gone, labels kept
    assert summary["n_cases"] == 2 and np.isclose(summary["mean"]["dice"], 1.0)
