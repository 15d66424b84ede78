"""summary.json as a typed, versioned record: round trip, older files, newer files and broken files."""

import json

import pytest

from nnunet_ray.runs.summary import SUMMARY_VERSION, RunSummary, load_summary, run_summaries, save_summary

SUMMARY = RunSummary(name="T_3d_fold0", run_dir="/r/T_3d_fold0", engine="tune", best_dice=0.8, best_epoch=3,
                     epochs=5, start_epoch=0, stopped_early=False, stop_reason="max_epochs",
                     best_checkpoint="/r/T_3d_fold0/epoch_0003", last_checkpoint="/r/T_3d_fold0/epoch_0004",
                     metrics="/r/T_3d_fold0/metrics.jsonl", tensorboard="/r/T_3d_fold0/tensorboard", seconds=60.0,
                     seconds_in_worker=50.0, started_at=1000.0, finished_at=1060.0, device="CPU", devices=1.0,
                     device_hours=60.0 / 3600, node_id="n1", splits_hash="abcd")


def test_round_trip_through_the_file(tmp_path):
    save_summary(tmp_path / "run", SUMMARY)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["version"] == SUMMARY_VERSION and written["best_dice"] == 0.8
    assert load_summary(tmp_path / "run") == SUMMARY
    assert run_summaries(tmp_path) == [SUMMARY]


def test_a_file_from_before_the_version_key_reads_and_unknown_keys_are_ignored():
    data = {k: v for k, v in SUMMARY.to_json().items() if k not in ("version", "node_id", "splits_hash", "engine",
                                                                        "device", "devices", "device_hours")}
    old = RunSummary.from_json({**data, "from_a_newer_minor": 1})
    assert old.best_epoch == 3 and old.node_id is None and old.splits_hash is None
    assert (old.engine, old.device, old.device_hours) == ("train", "CPU", 0.0)  # before the Tune engine existed


@pytest.mark.parametrize("data, problem", [
    ([1, 2], "not a run summary"),
    ({"name": "x"}, "missing run_dir, best_checkpoint, last_checkpoint"),
    ({**SUMMARY.to_json(), "version": SUMMARY_VERSION + 1}, "is newer than this nnunet_ray reads"),
])
def test_broken_and_newer_files_are_refused_naming_the_file(data, problem):
    with pytest.raises(match=f"^runs/x/summary.json: .*{problem}"):
        RunSummary.from_json(data, source="runs/x/summary.json")


def test_evaluation_summaries_of_the_same_name_are_passed_over(tmp_path):
    save_summary(tmp_path / "exp" / "3d_fold0", SUMMARY)
    (tmp_path / "exp" / "cv_predictions" / "3d_fold0").mkdir(parents=True)
    (tmp_path / "exp" / "cv_predictions" / "3d_fold0" / "summary.json").write_text('{"mean": {"dice": 0.8}}')
    assert run_summaries(tmp_path / "exp") == [SUMMARY]
    assert run_summaries(tmp_path, recursive=True) == [SUMMARY]
    assert run_summaries(tmp_path) == []  # not directly under tmp_path


def test_a_run_without_a_summary_has_not_finished(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_summary(tmp_path)
