"""The storage probe on a real Ray cluster: every node must read the input and write (and see) the results root."""

from __future__ import annotations

import pytest

from nnunet_ray.config import ConfigError
from nnunet_ray.data import storage
from nnunet_ray.distributed.probe import PROBE_DIR, probe_storage


def test_reachable_local_storage_passes_and_leaves_no_probe_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "plans.json").write_text("{}")
    nodes = probe_storage(readable={"data": str(tmp_path / "data" / "plans.json")}, results=str(tmp_path / "res"))
    assert nodes == 1
    assert list((tmp_path / "res").iterdir()) == []  # nothing left in the results root


def test_reachable_s3_storage_passes(s3_root):
    storage.write_text(storage.join(s3_root, "pre", "plans.json"), "{}")
    assert probe_storage(readable={"data": storage.join(s3_root, "pre", "plans.json")},
                         results=storage.join(s3_root, "results")) == 1
    assert storage.list_names(storage.join(s3_root, "results", PROBE_DIR)) == []


def test_unreadable_data_names_the_node_the_flag_and_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^node \S+ \([0-9a-f]{8}\) cannot read --data .*/missing/plans.json: "
                                          r"not found$"):
        probe_storage(readable={"data": str(tmp_path / "missing" / "plans.json")}, results=str(tmp_path / "res"))


def test_unwritable_results_root_names_the_flag_and_the_path(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^--results: cannot write .*a_file/res"):
        probe_storage(readable={}, results=str(tmp_path / "a_file" / "res"))


def test_a_missing_bucket_names_the_results_root(s3_server):
    with pytest.raises(ConfigError, match=r"^--results: cannot write s3://no-such-bucket/res .*(?i:bucket)"):
        probe_storage(readable={}, results=f"s3://test:test@no-such-bucket/res?endpoint_override={s3_server}"
                                           "&scheme=http&region=us-east-1")
