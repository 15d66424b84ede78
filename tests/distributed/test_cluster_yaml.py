"""cluster.yaml passes the same checks `ray up` runs before touching the cloud (schema, node types, worker counts)."""

import copy
import json
import os
import re
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
    types = copy.deepcopy(cluster_config["available_node_types"])
    head = types[cluster_config["head_node_type"]]["node_config"]
    assert "InstanceMarketOptions" not in head  # on-demand head
    workers = {name: t for name, t in types.items() if name != cluster_config["head_node_type"]}
    assert {"g5.2xlarge", "p4d.24xlarge"} == {t["node_config"]["InstanceType"] for t in workers.values()}  # 1, 8 GPUs
    for worker in workers.values():
        assert worker["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
        assert 0 <= worker["min_workers"] <= worker["max_workers"] <= cluster_config["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= cluster_config["max_workers"]


def test_head_and_workers_get_their_own_iam_profiles(cluster_config):
    """The head's profile replaces the role Ray would create for it (it launches workers); workers get the bucket
    role only, named once and reused by alias."""
    types = copy.deepcopy(cluster_config["available_node_types"])
    head = types.pop(cluster_config["head_node_type"])["node_config"]["IamInstanceProfile"]
    workers = [t["node_config"]["IamInstanceProfile"] for t in types.values()]
    assert head == {"Name": "nnunet-ray-head"}
    assert workers and all(w == {"Name": "nnunet-ray-worker"} for w in workers)
    assert CLUSTER_YAML.read_text().count("IamInstanceProfile: &worker_role") == 1
    header = CLUSTER_YAML.read_text().split("cluster_name:")[0]
    assert "iam:PassRole on the nnunet-ray-worker role" in header and "no EC2 rights" in header


def test_ssh_is_open_to_one_cidr_and_ray_up_opens_nothing_else(cluster_config):
    """Every node type names the one user-made security group, so `ray up` creates none (Ray's own group would open
    SSH to 0.0.0.0/0); the header's commands open SSH to SSH_CIDR only, set once."""
    from ray.autoscaler._private.aws.config import _configure_security_group  # what `ray up` runs

    groups = [t["node_config"]["SecurityGroupIds"] for t in cluster_config["available_node_types"].values()]
    assert len(groups) == 3 and all(g == groups[0] for g in groups)
    assert _configure_security_group(copy.deepcopy(cluster_config)) == cluster_config  # nothing created or opened
    header = CLUSTER_YAML.read_text().split("cluster_name:")[0]
    assert len(re.findall(r"SSH_CIDR=\d+\.\d+\.\d+\.\d+/\d+", header)) == 1
    ingress = [line for line in header.splitlines() if "authorize-security-group-ingress" in line]
    assert len(ingress) == 2
    assert all("--cidr $SSH_CIDR" in line or "--source-group $SG" in line for line in ingress)
    assert "0.0.0.0" not in yaml.safe_dump(cluster_config)  # no rule or listener open to every address


def test_every_ray_start_requires_the_token_and_the_dashboard_stays_on_loopback(cluster_config):
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cluster_config[key]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    head = next(c for c in cluster_config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert cluster_config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


def test_drivers_have_a_resource_on_the_on_demand_head_only(cluster_config):
    types = copy.deepcopy(cluster_config["available_node_types"])
    head = types.pop(cluster_config["head_node_type"])
    assert head["resources"]["nnunet_ray_driver"] > 0 and head["resources"]["CPU"] == 0
    assert all("nnunet_ray_driver" not in t["resources"] for t in types.values())
    assert {t["node_config"]["ImageId"] for t in [head, *types.values()]} == {head["node_config"]["ImageId"]}


def test_a_broken_cluster_yaml_is_rejected(cluster_config):
    broken = copy.deepcopy(cluster_config)
    broken["head_node_type"] = "cpu_head"  # not a defined node type: only the launcher's own check catches it
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))
