"""cluster.yaml passes the same checks `ray up` runs before touching the cloud (schema, node types, worker counts)."""

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config  # the checks `ray up` runs

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster_config():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_matches_ray_schema_and_launcher_checks(cluster_config):
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(cluster_config, schema)
    validate_config(prepare_config(copy.deepcopy(cluster_config)))


def test_cluster_nodes_run_the_project_image_with_gpu_workers(cluster_config):
    assert cluster_config["docker"]["image"].split("/")[-1].startswith("nnunet-ray:")
    assert "--gpus all" in cluster_config["docker"]["worker_run_options"]
    types = cluster_config["available_node_types"]
    head = types[cluster_config["head_node_type"]]["node_config"]
    assert "InstanceMarketOptions" not in head  # on-demand head
    workers = {name: t for name, t in types.items() if name != cluster_config["head_node_type"]}
    assert {"g5.2xlarge", "p4d.24xlarge"} == {t["node_config"]["InstanceType"] for t in workers.values()}  # 1, 8 GPUs
    for worker in workers.values():
        assert worker["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
        assert 0 <= worker["min_workers"] <= worker["max_workers"] <= cluster_config["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= cluster_config["max_workers"]


def test_every_node_gets_the_one_results_bucket_role(cluster_config):
    profiles = [t["node_config"]["IamInstanceProfile"] for t in cluster_config["available_node_types"].values()]
    assert len(profiles) == 3 and all(p == profiles[0] for p in profiles)
    assert CLUSTER_YAML.read_text().count("IamInstanceProfile: &") == 1  # named once, reused by alias


def test_only_ssh_is_open_to_the_internet_and_token_auth_stays_on(cluster_config):
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules  # the rules `ray up` creates

    extra = cluster_config["provider"].get("security_group", {}).get("IpPermissions", [])
    rules = _create_default_inbound_rules(["sg-cluster"], extra)
    open_to_all = [r for r in rules if any(ip.get("CidrIp") == "0.0.0.0/0" for ip in r.get("IpRanges", []))]
    assert [(r["FromPort"], r["ToPort"]) for r in open_to_all] == [(22, 22)]
    assert "RAY_AUTH_MODE=disabled" not in CLUSTER_YAML.read_text()  # Ray 2.60's default: token authentication on


def test_a_broken_cluster_yaml_is_rejected(cluster_config):
    broken = copy.deepcopy(cluster_config)
    broken["head_node_type"] = "cpu_head"  # not a defined node type: only the launcher's own check catches it
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))
