"""The plans.json file: typed round trip, migration of version 1, refusal of newer versions, the two hashes,
and re-deriving the topology for another patch size."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from nnunet_ray.data.atomic import save_json
from nnunet_ray.planning.patch import PatchSizeError, with_patch_size
from nnunet_ray.planning.plans import make_plans
from nnunet_ray.planning.schema import (
    PLANS_VERSION,
    Normalization,
    Plans,
    PlansError,
    PlansNotFoundError,
    load_plans,
    plans_from_json,
    save_plans,
)
from nnunet_ray.planning.topology import get_topology
from tests.planning.test_plans import dataset, fingerprint

# A Task04 3D plans.json exactly as the code before version 2 wrote it (no "version", one "hash", "scheme").
# The preprocessing hash of the `plans` fixture with two CT channels sharing one set of statistics, as the code before
# per-channel CT statistics computed it: plans without the new field keep their hash (their arrays stay valid).
SINGLE_CT_HASH = "d64a2a9908c6e2d3"
V1_PLANS = {
    "dataset": "Task04_Hippocampus", "dim": 3, "modalities": ["MRI"], "in_channels": 1, "n_classes": 3,
    "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}, "spacing": [1.0, 1.0, 1.0],
    "patch_size": [40, 56, 40], "kernels": [[3, 3, 3]] * 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
    "filters": [32, 64, 128, 256],
    "normalization": {"scheme": "mri", "channels": ["mri"], "ct_min": None, "ct_max": None, "ct_mean": None,
                      "ct_std": None},
    "anisotropic_axis": None, "preset": "msd", "hash": "0123456789abcdef",
}


@pytest.fixture
def plans() -> Plans:
    ds = dataset("Task04_Hippocampus")
    return make_plans(ds, fingerprint(ds.name, [[1.0, 1.0, 1.0]] * 3, [[36, 50, 35]] * 3), dim=3)


def test_save_and_load_roundtrip(tmp_path: Path, plans: Plans) -> None:
    path = save_plans(tmp_path / "sub", plans)
    assert load_plans(tmp_path / "sub") == plans and plans.version == PLANS_VERSION
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["plans.json"]  # no temporary file left
    written = json.loads(Path(path).read_text())
    assert written["version"] == PLANS_VERSION and written["min_fmap"] == 4 and written["max_depth"] == 6
    assert written["preprocessing_hash"] == plans.preprocessing_hash
    assert written["network_hash"] == plans.network_hash


def test_version_1_file_migrates_with_a_warning(tmp_path: Path, plans: Plans, caplog) -> None:
    save_json(tmp_path / "plans.json", V1_PLANS)
    with caplog.at_level(logging.WARNING, logger="nnunet_ray.planning.schema"):
        migrated = load_plans(tmp_path)
    assert "migrated" in caplog.text and str(tmp_path / "plans.json") in caplog.text
    assert migrated.version == PLANS_VERSION and migrated.normalization.channels == ("mri",)
    assert (migrated.min_fmap, migrated.max_depth) == (4, 6)
    # The same content as today's planner writes for Task04: the same network and the same arrays.
    assert migrated.network_hash == plans.network_hash
    assert migrated.preprocessing_hash == plans.preprocessing_hash


def test_version_1_file_with_only_a_scheme_gets_one_per_channel() -> None:
    old = {**V1_PLANS, "in_channels": 2, "modalities": ["T1", "T2"], "normalization": {"scheme": "mri"}}
    assert plans_from_json(old).normalization.channels == ("mri", "mri")


def test_newer_version_is_refused_with_one_line(tmp_path: Path, plans: Plans) -> None:
    save_json(tmp_path / "plans.json", {**plans.to_json(), "version": PLANS_VERSION + 1})
    with pytest.raises(PlansError, match=f"version {PLANS_VERSION + 1} is newer") as err:
        load_plans(tmp_path)
    assert "\n" not in str(err.value)


def test_load_recomputes_hashes_of_hand_edited_plans(tmp_path: Path, plans: Plans) -> None:
    edited = {**plans.to_json(), "patch_size": [32, 32, 32]}
    save_json(tmp_path / "plans.json", edited)
    loaded = load_plans(tmp_path)
    assert loaded.preprocessing_hash != plans.preprocessing_hash and loaded.preprocessing_hash != edited[
        "preprocessing_hash"]


def test_load_missing_plans_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(PlansNotFoundError, match=str(tmp_path)):
        load_plans(tmp_path)
    with pytest.raises(ValueError):  # also catchable as ValueError / FileNotFoundError
        load_plans(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_plans(tmp_path)


@pytest.mark.parametrize(("text", "problem"), [
    ("{not json", "valid JSON"), ("[1, 2]", "JSON object"), (json.dumps({"dim": 3}), "missing dataset"),
    (json.dumps({"version": "two"}), "not a positive integer"),
])
def test_load_bad_plans_file(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "plans.json").write_text(text)
    with pytest.raises(PlansError, match=problem):
        load_plans(tmp_path)


def test_hashes_are_stable_and_split_by_purpose(plans: Plans) -> None:
    assert len(plans.preprocessing_hash) == 16 and int(plans.network_hash, 16) >= 0
    assert plans.preprocessing_hash != plans.network_hash
    # A network-only change leaves the arrays valid; a patch or spacing change does not.
    wider = dataclasses.replace(plans, filters=[16, 32, 64, 128])
    assert wider.preprocessing_hash == plans.preprocessing_hash and wider.network_hash != plans.network_hash
    for change in ({"patch_size": [32, 32, 32]}, {"spacing": [1.5, 1.0, 1.0]}):
        assert dataclasses.replace(plans, **change).preprocessing_hash != plans.preprocessing_hash
    # Fields outside both lists (names, provenance) change neither.
    renamed = dataclasses.replace(plans, labels={"0": "bg", "1": "a", "2": "b"}, preset="auto", max_depth=5)
    assert (renamed.preprocessing_hash, renamed.network_hash) == (plans.preprocessing_hash, plans.network_hash)


def test_with_patch_size_uses_the_plans_rule(plans: Plans) -> None:
    bigger = with_patch_size(plans, (64, 64, 64))
    kernels, strides = get_topology([64, 64, 64], [1.0, 1.0, 1.0], min_fmap=4, max_depth=6)
    assert bigger.patch_size == (64, 64, 64) and [list(s) for s in bigger.strides] == strides
    assert [list(k) for k in bigger.kernels] == kernels and bigger.filters == (32, 64, 128, 256, 320)
    assert with_patch_size(bigger, plans.patch_size) == plans  # and back
    shallow = with_patch_size(dataclasses.replace(plans, max_depth=2), (64, 64, 64))
    assert len(shallow.strides) == 3  # the stored max_depth is honoured


@pytest.mark.parametrize(("patch", "problem"), [
    ((36, 56, 40), "36 on axis 0 is not a multiple of 8.*try \\[32, 56, 40\\]"),
    ((4, 4, 4), "no downsampling"),
    ((40, 56), "need 3 positive edges"),
])
def test_with_patch_size_refuses_sizes_the_rule_cannot_use(plans: Plans, patch: tuple, problem: str) -> None:
    with pytest.raises(PatchSizeError, match=problem):
        with_patch_size(plans, patch)


def test_multi_phase_ct_statistics_round_trip_and_single_ct_plans_hash_as_before(tmp_path: Path, plans: Plans) -> None:
    multi = dataclasses.replace(plans, in_channels=2, modalities=("CT", "CT"), normalization=Normalization(
        ("ct", "ct"), -80.0, 250.0, 40.0, 12.5, more_ct=((1, -20.0, 420.0, 150.0, 60.0),)))
    save_plans(tmp_path, multi)
    assert load_plans(tmp_path) == multi
    assert json.loads((tmp_path / "plans.json").read_text())["normalization"]["more_ct"] == [[1, -20, 420, 150, 60]]
    single = dataclasses.replace(multi, normalization=dataclasses.replace(multi.normalization, more_ct=()))
    assert "more_ct" not in single.to_json()["normalization"]  # plans.json as before the field
    assert single.preprocessing_hash == SINGLE_CT_HASH and multi.preprocessing_hash != single.preprocessing_hash
