"""``<case>.json`` as a typed record: the file round-trips, older files read, a damaged one is one error naming it."""

import json

import pytest

from nnunet_ray.data.records import RecordError
from nnunet_ray.preprocessing.record import CaseProperties, read_case_record, write_case_record

PROPS = CaseProperties(original_shape=(40, 50, 52), original_spacing=(2.0, 1.0, 1.0),
                       affine=((0.0, 0.0, 1.0, -10.0), (0.0, 1.0, 0.0, 5.0), (2.0, 0.0, 0.0, 0.0), (0, 0, 0, 1.0)),
                       crop_box=((1, 39), (2, 49), (2, 50)), resampled_shape=(25, 47, 48), pad=((0, 0), (1, 0), (0, 0)),
                       shape=(25, 48, 48), anisotropic_axis=0, target_spacing=(3.0, 1.0, 1.0),
                       foreground={"1": [[3, 4, 5]], "2": []}, case_id="case_007", plans_hash="0123456789abcdef",
                       mode="training", raw_files=[{"role": "image0", "name": "case_007.nii.gz", "size": 9}])


def test_round_trip(tmp_path):
    write_case_record(tmp_path, PROPS)
    saved = json.loads((tmp_path / "case_007.json").read_text())
    assert saved["crop_box"] == [[1, 39], [2, 49], [2, 50]] and saved["version"] == 1  # flat JSON, as before
    assert read_case_record(tmp_path, "case_007") == PROPS


def test_a_record_from_before_the_version_and_axis_keys_reads(tmp_path):
    old = {k: v for k, v in PROPS.to_json().items() if k not in ("version", "anisotropic_axis", "raw_files")}
    (tmp_path / "case_007.json").write_text(json.dumps(old))
    props = read_case_record(tmp_path, "case_007")
    # z: 38 slices at 2 mm became 25, so the re-derived target is 3.04 mm: ratio >= 3, the coarse axis is z.
    assert props.anisotropic_axis == 0 and props.raw_files is None and props.version == 1


def test_unprocessed_arrays_get_an_identity_geometry():
    props = CaseProperties.unprocessed("bench_000", (4, 5, 6), foreground={"1": [[0, 0, 0]]})
    assert props.shape == props.original_shape == props.resampled_shape == (4, 5, 6)
    assert props.crop_box == ((0, 4), (0, 5), (0, 6)) and props.pad == ((0, 0),) * 3 and props.affine[3][3] == 1.0


@pytest.mark.parametrize("text, problem", [
    ("{", r"not JSON"),
    ("[]", r"not a case record \(expected a JSON object\)"),
    ('{"version": 2}', r"version 2 is newer than this nnunet_ray reads \(1\)"),
    ('{"shape": [1, 2, 3]}', r"not a case record \(missing original_shape, original_spacing, affine, crop_box, "
                             r"resampled_shape, pad\); run preprocess again"),
])
def test_a_damaged_record_names_the_file(tmp_path, text, problem):
    (tmp_path / "case_007.json").write_text(text)
    with pytest.raises(RecordError, match=rf"^{tmp_path / 'case_007.json'}: {problem}"):
        read_case_record(tmp_path, "case_007")


def test_a_malformed_value_names_the_file(tmp_path):
    (tmp_path / "case_007.json").write_text(json.dumps({**PROPS.to_json(), "crop_box": [[1, 2, 3]]}))
    with pytest.raises(RecordError, match=r"case_007.json: not a case record \(.*\); run preprocess again"):
        read_case_record(tmp_path, "case_007")
