"""predict.json: what makes two runs the same ensemble, when a case counts as done, reading old and bad records."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from nnunet_ray.data import storage
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.inference.record import (
    PredictRecord,
    input_fingerprint,
    is_prediction_file,
    read_record,
    weights_hash,
    write_record,
)


def _record(*members: str, **options) -> PredictRecord:
    return PredictRecord(members=[{"path": f"/x/{m}", "network_hash": "n", "preprocessing_hash": "p",
                                   "weights_hash": m} for m in members],
                         options={"tta": False, "amp": False, "overlap": 0.5, "blend": "gaussian",
                                  "postprocess": False, **options},
                         largest_component=[], n_classes=4, labels={"0": "background", "1": "organ"})


@pytest.mark.parametrize("other, differences", [
    (_record("b", "a"), []),  # the same members in another order
    (_record("a", "b", actors=4, out="elsewhere"), []),  # options that do not change the predictions
    (_record("a", "c"), ["members"]),  # a retrained fold: other weights
    (_record("a", "b", tta=True, overlap=0.25), ["tta", "overlap"]),
])
def test_what_makes_two_runs_the_same_ensemble(other, differences):
    assert _record("a", "b").differences(other) == differences


@pytest.fixture()
def case(tmp_path, synth_task) -> CaseFiles:
    """A test case whose image is a private copy (its time and size may change)."""
    image = tmp_path / "images" / "synth_006.nii.gz"
    image.parent.mkdir()
    shutil.copy(synth_task / "imagesTs" / "synth_006.nii.gz", image)
    return CaseFiles("synth_006", (image,))


def test_a_case_is_done_only_as_recorded_from_the_same_image_with_every_output(case):
    record = _record("a")
    record.cases[case.case_id] = {"status": "done", "seconds": 1.0, "error": None, "inputs": input_fingerprint(case)}
    record = PredictRecord.from_json(json.loads(json.dumps(record.to_json())))  # as a rerun reads it
    label_only = ["synth_006.nii.gz", "predict.json"]
    assert record.is_done(case, label_only, save_probabilities=False)
    assert not record.is_done(case, label_only, save_probabilities=True)  # its .npz is not there
    assert not record.is_done(case, ["predict.json"], save_probabilities=False)  # its output was removed
    os.utime(case.images[0], ns=(0, 0))  # the image was replaced since
    assert not record.is_done(case, label_only, save_probabilities=False)
    record.cases[case.case_id].update(status="failed", inputs=input_fingerprint(case))
    assert not record.is_done(case, label_only, save_probabilities=False)
    assert record.output_names() == {"synth_006.nii.gz", "synth_006.npz"}


def test_prediction_files_are_label_maps_and_probabilities():
    assert [is_prediction_file(n) for n in ("a.nii.gz", "a.nii", "a.npz", "predict.json", "summary.csv",
                                            ".tmp.12.ab.a.nii.gz")] == [True, True, True, False, False, False]


def test_weights_hash_follows_the_values():
    weights = {"w": torch.arange(6.0).reshape(2, 3), "steps": torch.tensor(3)}
    same = {k: v.clone() for k, v in weights.items()}
    assert weights_hash(weights) == weights_hash(same)
    same["w"][0, 0] = 1e-6
    assert weights_hash(weights) != weights_hash(same)


def test_an_old_record_is_read_and_differs_by_its_members(tmp_path):
    old = {"members": [{"path": "/x/a", "network_hash": "n", "preprocessing_hash": "p"}],
           "options": _record("a").options, "largest_component": [], "n_classes": 4, "labels": {}, "cases": {},
           "actors": 1, "seconds": 2.0}
    (tmp_path / "predict.json").write_text(json.dumps(old))
    record = read_record(str(tmp_path))
    assert record.version == 1 and record.planned == [] and record.differences(_record("a")) == ["members"]


@pytest.mark.parametrize("content, problem", [("{ trunc", "Expecting property name"), ("[]", "not a prediction record"),
                                              ('{"members": [], "options": {}}', "not a prediction record")])
def test_a_bad_record_is_a_value_error_naming_the_file(tmp_path, content, problem):
    (tmp_path / "predict.json").write_text(content)
    with pytest.raises(ValueError, match=rf"^cannot read {tmp_path}/predict.json: .*{problem}"):
        read_record(str(tmp_path))


def test_records_round_trip_on_object_storage(s3_root):
    record = _record("a", "b")
    record.planned = ["synth_006"]
    write_record(s3_root, record)
    assert read_record(s3_root) == record and read_record(storage.join(s3_root, "elsewhere")) is None
