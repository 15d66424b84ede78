"""best_configuration.json as a typed, versioned record: round trip, older files, broken and newer files."""

import json

import pytest

from nnunet_ray.runs.best_configuration import (
    BEST_CONFIGURATION_VERSION,
    BestConfiguration,
    load_best_configuration,
    save_best_configuration,
)

BEST = BestConfiguration(configuration="2d+3d", dims=(2, 3), mean_dice={"2d": 0.7, "3d": 0.8, "2d+3d": 0.82},
                         largest_component=(1,), dice_postprocessed=0.83)


def test_round_trip_through_the_file_and_none_before_cross_validation_chose(tmp_path):
    assert load_best_configuration(tmp_path) is None
    save_best_configuration(tmp_path, BEST)
    written = json.loads((tmp_path / "best_configuration.json").read_text())
    assert written == {"configuration": "2d+3d", "dims": [2, 3], "mean_dice": {"2d": 0.7, "3d": 0.8, "2d+3d": 0.82},
                       "largest_component": [1], "dice_postprocessed": 0.83, "version": BEST_CONFIGURATION_VERSION}
    assert load_best_configuration(tmp_path) == BEST


def test_a_file_from_before_the_version_key_reads():
    old = {k: v for k, v in BEST.to_json().items() if k != "version"}
    assert BestConfiguration.from_json(old) == BEST


@pytest.mark.parametrize("text, problem", [
    ("[1]", "not a best configuration"),
    ('{"configuration": "3d"}', "not a best configuration \\(KeyError"),
    (json.dumps({**BEST.to_json(), "dims": ["x"]}), "not a best configuration \\(ValueError"),
    (json.dumps({**BEST.to_json(), "version": BEST_CONFIGURATION_VERSION + 1}), "version 2 is newer than"),
    ("{", "not JSON"),
])
def test_broken_and_newer_files_are_refused_naming_the_file(tmp_path, text, problem):
    (tmp_path / "best_configuration.json").write_text(text)
    with pytest.raises(match=f"^{tmp_path}/best_configuration.json: {problem}"):
        load_best_configuration(tmp_path)
