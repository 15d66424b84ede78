"""An S3 stand-in that checks who signs and can be stopped: credentials given in a URI reach the workers of the
local cluster a command starts; stopped mid-upload of a checkpoint or of a prediction, the upload fails with one
line naming the object (pyarrow's copy_files would report success for an object it never published), nothing
uploaded before is lost, and a rerun against the restarted store completes.

The store is moto behind a werkzeug server this module controls. moto takes any request, signed or not (pyarrow
without credentials sends unsigned ones), so ``S3StandIn(key=...)`` refuses every request not signed with that access
key, as AWS would. It stops (its listening socket closed, so every later request is refused, as a crashed server's)
when a chosen request arrives, and starts again on the same port with its objects (moto keeps them in this process).
Each refused upload costs pyarrow's retries, about 6 s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import Callable

import nibabel as nib
import numpy as np
import pyarrow.fs as pafs
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from ray.train import Checkpoint
from ray.train._internal.storage import StorageContext  # a Tune trial's storage context (see ray_internals)
from werkzeug.serving import make_server

from nnunet_ray import cli
from nnunet_ray.data import storage
from nnunet_ray.data.credentials import ACCESS_KEY, FORWARD_ENV, SECRET_KEY, SESSION_TOKEN
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.distributed import ray_internals, run_storage
from nnunet_ray.distributed.predict_pool import CaseTask, PredictActor
from nnunet_ray.distributed.run_storage import storage_location, upload_checkpoint
from nnunet_ray.runs.checkpoint import epoch_dir_name

StopWhen = Callable[[str, str], bool]  # (HTTP method, request path) -> stop the server at this request
AWS_VARIABLES = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, FORWARD_ENV)


class S3StandIn:
    """moto on a fixed port. ``key``: refuse (403) requests not signed with this access key. ``stop_at(when)``:
    stop at the first request ``when`` accepts (answered 503, then every connection refused); ``start()`` brings it
    back with the same objects."""

    def __init__(self, key: str = "k") -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.key, self.moto = key, DomainDispatcherApplication(create_backend_app)
        self.server, self.when = None, None

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=MotoRequestHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stop_at(self, when: StopWhen) -> None:
        self.when = when

    def _app(self, environ: dict, start_response):
        if f"Credential={self.key}/" not in environ.get("HTTP_AUTHORIZATION", ""):  # SigV4 names the access key
            start_response("403 Forbidden", [("Content-Type", "application/xml")])
            return [b"<Error><Code>AccessDenied</Code><Message>not signed with the expected key</Message></Error>"]
        if self.when is not None and self.when(environ["REQUEST_METHOD"], environ["PATH_INFO"]):
            self.when = None
            self.stop()  # in a request thread: serve_forever runs in its own
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"stopping"]
        return self.moto(environ, start_response)

    def new_root(self, secret: str = "s") -> str:
        """A new bucket, as an ``s3://`` root whose URI carries the endpoint and the credentials (``self.key``)."""
        bucket, options = f"bucket-{uuid.uuid4().hex[:12]}", f"endpoint_override=127.0.0.1:{self.port}&scheme=http"
        fs, _ = pafs.FileSystem.from_uri(f"s3://{self.key}:{secret}@{bucket}?{options}&region=us-east-1"
                                         "&allow_bucket_creation=true")
        fs.create_dir(bucket)
        return f"s3://{self.key}:{secret}@{bucket}/root?{options}&region=us-east-1"


@pytest.fixture
def uri_credentials_undone(monkeypatch):
    """The AWS_* variables a command takes from a URI are removed after the test (they stay in a CLI's process)."""
    for name in AWS_VARIABLES:
        monkeypatch.setenv(name, "")  # records the variable's state (delenv alone records nothing when unset)
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def s3():
    server = S3StandIn()
    server.start()
    yield server
    server.stop()


def test_a_local_cluster_gets_the_uri_credentials_and_nothing_stores_them(synth_task):
    """The CLI in its own process starts its own local cluster: the storage probe's task (run on a worker, writing
    into --results) signs with the key the command moved from the URI to its environment, and no object written
    nor line printed holds the secret."""
    secret = f"local-s3cr3t-{uuid.uuid4().hex[:8]}"
    s3 = S3StandIn(key="AKIALOCAL")
    s3.start()
    try:
        root = s3.new_root(secret)
        dropped = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", *AWS_VARIABLES)
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        done = subprocess.run([sys.executable, "-m", "nnunet_ray.cli", "plan", "--data", str(synth_task),
                               "--results", root], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        fs, bucket = storage.resolve(storage.parent(root))
        objects = [i.path for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) if i.is_file]
        assert f"{bucket}/root/{synth_task.name}/3d/plans.json" in objects
        assert secret not in done.stdout + done.stderr and "AKIALOCAL" not in done.stdout + done.stderr
        assert not [path for path in objects if secret.encode() in fs.open_input_stream(path, compression=None).read()]
        with pytest.raises(storage.StorageError, match="ACCESS_DENIED"):  # what a worker without the key gets
            storage.write_text(storage.join(root.replace(f"AKIALOCAL:{secret}@", "OTHER:key@"), "x"), "x")
    finally:
        s3.stop()


def _put_of(name: str) -> StopWhen:
    """Stop at the upload of the object whose key ends with ``name`` (a single PUT or a multipart part's)."""
    return lambda method, path: method == "PUT" and path.endswith(name)


def _checkpoint(folder, seed: int):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in ("config.json", "model.pt", "plans.json", "train_state.pt"):
        (folder / name).write_bytes(rng.bytes(70_000))
    return folder


def _one_line_naming(error: pytest.ExceptionInfo, location: str) -> None:
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{location}: cannot upload ("), message
    assert "k:s@" not in message


def _persisting(engine: str, results: str, monkeypatch) -> tuple[Callable[[str, int], object], str, pafs.FileSystem]:
    """(local checkpoint folder, epoch) -> the persisted Checkpoint, as each engine uploads a trial's checkpoints:
    Ray Train through ``upload_checkpoint`` (its ``checkpoint_upload_fn``), a Tune trial through its storage
    context as ``name_trial_checkpoints_by_epoch`` sets it up; the run folder's path in the bucket, its filesystem."""
    path, fs = storage_location(results)  # what Ray is given
    if engine == "train":
        run = types.SimpleNamespace(experiment_fs_path=f"{path}/run", storage_filesystem=fs)
        monkeypatch.setattr(run_storage.ray.train, "get_context",
                            lambda: types.SimpleNamespace(get_storage=lambda: run))
        return (lambda local, epoch: upload_checkpoint(Checkpoint(local), epoch_dir_name(epoch))), f"{path}/run", fs
    context = StorageContext(path, "cv", storage_filesystem=fs, trial_dir_name="run")
    context.__class__ = ray_internals._EpochNamedStorage

    def persist(local: str, epoch: int):
        context.current_checkpoint_index = epoch
        return context.persist_current_checkpoint(Checkpoint(local))

    return persist, f"{path}/cv/run", fs


@pytest.mark.parametrize("engine", ["train", "tune"])
def test_a_checkpoint_upload_cut_by_the_store_stopping_names_the_object_and_a_rerun_completes(engine, s3, tmp_path,
                                                                                             monkeypatch):
    persist, run, fs = _persisting(engine, storage.join(s3.new_root(), "results"), monkeypatch)
    epochs = [_checkpoint(tmp_path / f"epoch_000{i}", seed=i) for i in range(2)]
    persist(str(epochs[0]), 0)

    s3.stop_at(_put_of("epoch_0001/model.pt"))
    with pytest.raises(storage.StorageError) as error:  # fails the report: nothing registered, the trial restarts
        persist(str(epochs[1]), 1)
    _one_line_naming(error, f"s3://{run}/epoch_0001/model.pt")

    s3.start()
    stored = [info.path for info in fs.get_file_info(pafs.FileSelector(run, recursive=True))]
    assert f"{run}/epoch_0001/config.json" in stored and f"{run}/epoch_0001/model.pt" not in stored
    persisted = persist(str(epochs[1]), 1)  # the rerun's report
    assert persisted.path == f"{run}/epoch_0001"
    for epoch in epochs:  # nothing lost: the earlier checkpoint as it was, the new one whole
        for local in epoch.iterdir():
            with fs.open_input_stream(f"{run}/{epoch.name}/{local.name}", compression=None) as stream:
                assert stream.read() == local.read_bytes(), f"{epoch.name}/{local.name}"


def _case_of_zeros(case) -> np.ndarray:
    """A predictor: class 0 everywhere, ``(K, Z, Y, X)`` on the case's original grid."""
    x, y, z = nib.load(case.images[0]).shape[:3]
    probs = np.zeros((4, z, y, x), np.float32)
    probs[0] = 1
    return probs


def test_a_prediction_upload_cut_by_the_store_stopping_names_the_object_and_a_rerun_completes(s3, synth_task):
    out = storage.join(s3.new_root(), "preds")
    actor = PredictActor.__new__(PredictActor)  # the actor's predict() as is, with a stand-in ensemble
    actor.predictors = [_case_of_zeros]
    first, second = (CaseTask(ensemble=0, case=case, out_dir=out, save_probabilities=True)
                     for case in load_dataset(synth_task).test)
    assert actor.predict(first)["status"] == "done"
    before = storage.read_bytes(storage.join(out, f"{first.case.case_id}.nii.gz"))

    s3.stop_at(_put_of(f"{second.case.case_id}.nii.gz"))  # its probabilities go first, then the label map
    with pytest.raises(storage.StorageError) as error:  # the pool records the case as failed with this line
        actor.predict(second)
    _one_line_naming(error, storage.display(storage.join(out, f"{second.case.case_id}.nii.gz")))

    s3.start()
    assert f"{second.case.case_id}.nii.gz" not in storage.list_names(out)  # never a label map half uploaded
    assert actor.predict(second)["status"] == "done"  # the rerun
    names = {f"{task.case.case_id}{suffix}" for task in (first, second) for suffix in (".nii.gz", ".npz")}
    assert names <= set(storage.list_names(out))
    assert storage.read_bytes(storage.join(out, f"{first.case.case_id}.nii.gz")) == before  # nothing lost


def test_a_failed_write_ends_a_command_in_one_line_naming_the_object(s3, synth_task, capsys,
                                                                      uri_credentials_undone):
    root = s3.new_root()
    missing = root.replace("s3://k:s@bucket-", "s3://k:s@gone-")  # a bucket that is not there: refused at once
    labels = str(synth_task / "labelsTs")
    status = cli.main(["evaluate", "--preds", labels, "--labels", labels, "--out", storage.join(missing, "scores")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith(f"nnunet-ray evaluate: error: {storage.display(missing)}/scores/summary.")
    assert (": cannot write (" in err[0] or ": cannot upload (" in err[0]) and "k:s@" not in err[0]
