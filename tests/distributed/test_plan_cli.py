"""`nnunet-ray plan --print` in this process, on the session's Ray cluster (the e2e test runs `plan` as users do)."""

from __future__ import annotations

import json

from nnunet_ray import cli


def test_plan_print_writes_the_plans_json_to_stdout_only(synth_task, capsys):
    assert cli.main(["plan", "--data", str(synth_task), "--dim", "2", "--print"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert plans["version"] == 2 and plans["dim"] == 2 and len(plans["patch_size"]) == 2
    assert not (synth_task / "plans.json").exists()  # --print without --results writes nothing
