"""Credentials in a location URI go to the environment before a command runs: the config keeps the clean location,
pyarrow opens the bucket from the environment, and a conflict with AWS_* variables already set is one line."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest

from nnunet_ray import cli
from nnunet_ray.config import ConfigError, CVConfig, PredictConfig, TrainConfig
from nnunet_ray.data import credentials, storage
from nnunet_ray.data.credentials import ACCESS_KEY, FORWARD_ENV, SECRET_KEY, SESSION_TOKEN

SECRET = "wJalr/XUtnFEMI+K7MDENG"  # holds "/" and "+", as AWS secrets do


@pytest.fixture
def clean_env(monkeypatch):
    """No AWS credentials in the environment; whatever a test (or the code it runs) sets is undone after it."""
    for name in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, FORWARD_ENV):
        monkeypatch.setenv(name, "")  # records the variable's state (delenv alone records nothing when unset)
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("location, clean, found", [
    ("s3://AKID:s3cr3t@bucket/root?endpoint_override=h:1", "s3://bucket/root?endpoint_override=h:1",
     ("AKID", "s3cr3t")),
    ("s3://AKID:a%2Fb+c@bucket", "s3://bucket", ("AKID", "a/b+c")),  # percent-decoded as pyarrow does
    ("s3://AKID:a/b+c@bucket/x", "s3://bucket/x", ("AKID", "a/b+c")),  # an unescaped "/" (pyarrow refuses it)
    ("s3://bucket/run@2/x", "s3://bucket/run@2/x", None),  # an "@" in an object's name
    ("s3://bucket/root", "s3://bucket/root", None),
    ("/data/Task04", "/data/Task04", None),
    ("hdfs://hadoop@namenode:8020/data", "hdfs://hadoop@namenode:8020/data", None),  # a user name, no secret
])
def test_split_credentials(location, clean, found):
    assert credentials.split_credentials(location) == (clean, found)


@pytest.mark.parametrize("location, problem", [
    ("s3://AKID@bucket/x", "credentials in an s3:// URI are written KEY:SECRET@bucket"),
    ("s3://:s3cr3t@bucket/x", "credentials in an s3:// URI are written KEY:SECRET@bucket"),
    ("gs://user:s3cr3t@bucket/x", "only s3:// URIs may carry credentials"),
])
def test_malformed_credentials_are_refused_without_showing_them(location, problem):
    with pytest.raises(ValueError, match=problem) as error:
        credentials.split_credentials(location)
    assert "s3cr3t" not in str(error.value) and "AKID" not in str(error.value)


def test_display_hides_a_secret_holding_a_slash():
    assert storage.display(f"s3://AKID:{SECRET}@bucket/root?scheme=http") == "s3://bucket/root"


def test_every_location_of_a_config_is_cleaned_and_the_credentials_set(clean_env):
    root = f"s3://AKID:{SECRET}@bucket/results?scheme=http"
    cfg = CVConfig(data="/raw/Task04", results=root, train=TrainConfig(data=storage.join(root, "pre")))
    clean = credentials.into_environment(cfg)
    assert clean.results == "s3://bucket/results?scheme=http" and clean.data == "/raw/Task04"
    assert clean.train.data == "s3://bucket/results/pre?scheme=http"  # nested configs too
    predict = credentials.into_environment(PredictConfig(models=(root, "/local/run"), out=storage.join(root, "p")))
    assert predict.models == ("s3://bucket/results?scheme=http", "/local/run")
    assert credentials.forwarded_environment() == {ACCESS_KEY: "AKID", SECRET_KEY: SECRET}


def test_a_config_without_credentials_is_returned_as_is(clean_env):
    cfg = TrainConfig(data="s3://bucket/pre", results="/results")
    assert credentials.into_environment(cfg) is cfg
    assert credentials.forwarded_environment() == {}


def test_credentials_equal_to_the_environment_are_accepted_and_not_forwarded(clean_env):
    clean_env.setenv(ACCESS_KEY, "AKID")
    clean_env.setenv(SECRET_KEY, SECRET)
    cfg = credentials.into_environment(TrainConfig(results=f"s3://AKID:{SECRET}@bucket/r"))
    assert cfg.results == "s3://bucket/r"
    assert credentials.forwarded_environment() == {}  # the user's own environment: a joined cluster is theirs to set


@pytest.mark.parametrize("env, clashing", [
    ({ACCESS_KEY: "OTHER"}, ACCESS_KEY),
    ({ACCESS_KEY: "AKID", SECRET_KEY: "other"}, SECRET_KEY),
    ({SESSION_TOKEN: "token-of-other-credentials"}, SESSION_TOKEN),
])
def test_credentials_differing_from_the_environment_are_refused_naming_the_flag(clean_env, env, clashing):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^--results: the credentials in its URI differ from .*{clashing}") as error:
        credentials.into_environment(TrainConfig(results=f"s3://AKID:{SECRET}@bucket/r"))
    assert SECRET not in str(error.value)
    assert all(os.environ.get(name) == value for name, value in env.items())  # nothing overwritten


def test_two_locations_with_different_credentials_are_refused(clean_env):
    with pytest.raises(ConfigError, match="^--results: the credentials in its URI differ from those in --data's"):
        credentials.into_environment(TrainConfig(data="s3://A:one@bucket/pre", results="s3://B:two@bucket/r"))


def test_the_cli_refuses_a_conflict_in_one_line_without_the_secret(clean_env, capsys):
    clean_env.setenv(ACCESS_KEY, "OTHER")
    status = cli.main(["evaluate", "--preds", f"s3://AKID:{SECRET}@bucket/preds", "--labels", "/nowhere"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("nnunet-ray evaluate: error: --preds: the credentials in its URI differ from "
                             "AWS_ACCESS_KEY_ID")
    assert SECRET not in err[0]


def test_the_cli_reads_a_bucket_with_the_uri_credentials_from_the_environment(clean_env, s3_root, synth_task,
                                                                             tmp_path, capsys):
    storage.upload(synth_task / "labelsTs", storage.join(s3_root, "preds"))  # labels as predictions: perfect scores
    preds = storage.join(s3_root.replace("test:test@", f"AKID:{quote(SECRET, safe='')}@"), "preds")
    status = cli.main(["evaluate", "--preds", preds, "--labels", str(synth_task / "labelsTs"),
                       "--out", str(tmp_path / "scores")])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert SECRET not in out + err and "AKID" not in out + err
    assert [p.name for p in (tmp_path / "scores").iterdir()] and \
        all(SECRET not in p.read_text() for p in (tmp_path / "scores").iterdir())
    assert credentials.forwarded_environment() == {ACCESS_KEY: "AKID", SECRET_KEY: SECRET}
