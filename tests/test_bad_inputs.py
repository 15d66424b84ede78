"""Every bad input the CLI is known to meet: exactly one error line naming the input, exit 1 or 2, no traceback,
no Ray started, nothing written where the command would write.

Each row runs ``cli.main`` in this process (a subprocess per row would spend most of the suite's time importing
torch). "No Ray started" is checked at the one place a cluster starts: ``ray.init`` raises for the duration of the
test, and ``ray.is_initialized`` answers False even when another test's session cluster is up, so a command that
would reach ``init_ray`` fails this test instead of joining a cluster. "Nothing written" compares every file under
the test's folder (inputs and outputs) before and after.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from nnunet_ray import cli
from tests.inference.conftest import save_random_checkpoint, tiny_plans
from tests.training.conftest import build_tiny_task


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Good and bad inputs: a raw task, a preprocessed one, files standing where folders go, corrupt files."""
    root = tmp_path_factory.mktemp("bad_inputs")
    pre = build_tiny_task(root / "tiny", cases=4, folds=2)
    raw = root / "tiny" / "Task97_Tiny"
    bad_splits = root / "bad_splits" / "3d"
    bad_splits.mkdir(parents=True)
    for item in pre.iterdir():
        (bad_splits / item.name).symlink_to(item)
    (bad_splits / "splits.json").unlink()
    (bad_splits / "splits.json").write_text('[{"train": ["a"')
    bad_plans = root / "bad_plans" / "3d"
    bad_plans.mkdir(parents=True)
    (bad_plans / "plans.json").write_text("{not json")
    plans = tiny_plans(raw, 3)
    good = save_random_checkpoint(root / "good" / "best", plans)
    checkpoint = save_random_checkpoint(root / "ckpt" / "best", plans)
    model = checkpoint / "model.pt"
    model.write_bytes(model.read_bytes()[:300])  # cut short, as by a full disk
    bad_raw = root / "bad_raw"
    bad_raw.mkdir()
    (bad_raw / "dataset.json").write_text('{"name": ')
    (root / "a_file").write_text("not a folder")
    (root / "space.yaml").write_text("batch_size: {choice: [.inf]}\n")
    (root / "string_bool.json").write_text('{"amp": "false"}')  # a JSON string, which Python would call true
    save_random_checkpoint(root / "newer_exp" / "run" / "best", plans)
    (root / "newer_exp" / "best_configuration.json").write_text('{"version": 99}')
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("the user's")
    return {"raw": str(raw), "pre": str(pre), "bad_splits": str(bad_splits), "bad_plans": str(bad_plans),
            "checkpoint": str(checkpoint), "good": str(good), "bad_raw": str(bad_raw), "file": str(root / "a_file"),
            "space": str(root / "space.yaml"), "nonempty": str(root / "nonempty"), "root": str(root),
            "labels": str(raw / "labelsTr"), "string_bool": str(root / "string_bool.json"),
            "newer_exp": str(root / "newer_exp")}


# (name, argv with {placeholders}, exit code, what the one line must contain)
BAD_INPUTS = [
    ("train --learning-rate inf", "train --data {pre} --results {out} --learning-rate inf", 2,
     "--learning-rate: inf is not a finite number"),
    ("train --results on a file", "train --data {pre} --results {file}", 2, "--results: "),
    ("train with a malformed splits.json", "train --data {bad_splits} --results {out}", 2,
     "splits.json: invalid JSON"),
    ("train with a malformed plans.json", "train --data {bad_plans} --results {out}", 2, "plans.json"),
    ("train --fold out of range", "train --data {pre} --results {out} --fold 7", 2, "--fold: 7 is not in 0..1"),
    ("preprocess --results on a file", "preprocess --data {raw} --results {file}", 2, "--results: "),
    ("preprocess a malformed dataset.json", "preprocess --data {bad_raw} --results {out}", 2, "dataset.json"),
    ("plan a folder without dataset.json", "plan --data {out}", 2, "dataset folder not found"),
    ("cv --learning-rate -1 on a raw dataset", "cv --data {raw} --results {out} --folds 0 --learning-rate -1", 2,
     "--learning-rate: must be > 0"),
    ("cv --patch-size of the wrong rank", "cv --data {raw} --results {out} --folds 0 --patch-size 64 64", 2,
     "--patch-size: needs 3 edges for --dim 3"),
    ("cv --dims 4", "cv --data {raw} --results {out} --dims 4", 2, "--dims"),
    ("cv --resume of nothing", "cv --data {pre} --results {out} --folds 0-1 --resume", 2, "--resume"),
    ("cv --config with a string for a bool", "cv --data {raw} --results {out} --folds 0 --config {string_bool}", 2,
     "--config: " + "{string_bool}: amp: 'false' is not a valid bool"),
    ("tune --patch-size of the wrong rank", "tune --data {raw} --results {out} --patch-size 64,64", 2,
     "needs 3 edges"),
    ("tune --learning-rate loguniform:1e-4:inf", "tune --data {raw} --results {out} "
     "--learning-rate loguniform:1e-4:inf", 2, "learning_rate: 'inf' is not finite"),
    ("tune --search-space with .inf for an int", "tune --data {raw} --results {out} --search-space {space}", 2,
     "batch_size: inf is not finite"),
    ("tune --num-samples 0", "tune --data {raw} --results {out} --learning-rate 1e-3 --num-samples 0", 2,
     "--num-samples: must be >= 1"),
    ("predict a truncated model.pt", "predict --models {checkpoint} --input {raw} --out {out}", 2,
     "model.pt: not a readable checkpoint file (PytorchStreamReader failed reading zip archive"),
    ("predict with a newer best_configuration.json", "predict --models {newer_exp} --input {raw} --out {out}", 2,
     "best_configuration.json: version 99 is newer than this nnunet_ray reads"),
    ("predict --out on a file", "predict --models {checkpoint} --input {raw} --out {file}", 2, "--out: "),
    ("predict into a folder of outputs with no record", "predict --models {good} --input {raw}/imagesTr "
     "--out {labels}", 2, "predict.json"),
    ("evaluate --out on a file", "evaluate --preds {labels} --labels {labels} --out {file}", 2, "--out: "),
    ("evaluate --cv with --out", "evaluate --cv {newer_exp} --data {raw} --out {out}", 2, "--out: goes without --cv"),
    ("evaluate with missing predictions", "evaluate --preds {nonempty} --labels {labels}", 2, "no prediction"),
    ("download --out on a file", "download --task 4 --out {file}", 2, "--out: "),
    ("download --task 11", "download --task 11 --out {out}", 2, "--task: MSD tasks are 1-10"),
    ("synth into a non-empty folder", "synth --out {nonempty}", 2, "not empty"),
]


def _tree(root: str) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(root).rglob("*") if p.is_file()}


@pytest.mark.parametrize("name, argv, code, message", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_a_bad_input_is_one_line_before_any_work(name, argv, code, message, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _no_ray)
    out = tmp_path / "out"
    before = _tree(inputs["root"]) | _tree(str(tmp_path))
    assert cli.main(argv.format(out=out, **inputs).split()) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnunet-ray {argv.split()[0]}: error: "), err
    assert message.format(**inputs) in err[0] and "Traceback" not in err[0], err[0]
    assert _tree(inputs["root"]) | _tree(str(tmp_path)) == before and not out.exists()


def _no_ray(*args, **kwargs):
    raise AssertionError("Ray was started before the bad input was refused")


def test_the_table_covers_every_command():
    assert {row[1].split()[0] for row in BAD_INPUTS} == set(cli.COMMANDS)
