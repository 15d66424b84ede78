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
    workers = cluster_config["available_node_types"]["gpu_worker"]
    assert workers["max_workers"] <= cluster_config["max_workers"]


def test_a_broken_cluster_yaml_is_rejected(cluster_config):
    broken = copy.deepcopy(cluster_config)
    broken["head_node_type"] = "cpu_head"  # not a defined node type: only the launcher's own check catches it
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))
