"""`nnunet-ray download` against a real HTTP server on 127.0.0.1 serving a small MSD-layout tar (Range supported)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from nnunet_ray import cli
from nnunet_ray.config import SynthConfig
from nnunet_ray.data import download
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.synth import make_synthetic_task

NAME = "Task04_Hippocampus"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (name -> bytes) with HTTP range support, recording each request's Range header."""

    files: dict[str, bytes] = {}
    ranges: list[str | None] = []
    honour_ranges = True

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        self.ranges.append(wanted)
        start = int(wanted.split("=")[1].split("-")[0]) if wanted and self.honour_ranges else 0
        if start >= len(body) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def mirror():
    handler = type("Handler", (_Handler,), {"files": {}, "ranges": [], "honour_ranges": True})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _tar_of(folder: Path, *, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=NAME)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    raw = make_synthetic_task(SynthConfig(out=str(tmp_path_factory.mktemp("src") / NAME), cases=2, test=1, size=16))
    return _tar_of(raw, extra={f"{NAME}/imagesTr/._case_000.nii.gz": b"macOS metadata"})


@pytest.fixture
def served(mirror, archive, monkeypatch):
    url, handler = mirror
    handler.files[f"{NAME}.tar"] = archive
    monkeypatch.setitem(download.MSD_TASKS, 4, (NAME, hashlib.md5(archive).hexdigest()))  # our small archive's sum
    return url, handler


def test_download_verifies_and_extracts_into_the_dataset_layout(served, tmp_path):
    url, handler = served
    target = download.download_task(4, tmp_path, mirror=url)
    assert target == tmp_path / NAME
    dataset = load_dataset(target)
    assert len(dataset.training) == 2 and len(dataset.test) == 1
    assert not list(target.rglob("._*"))  # macOS metadata left out
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]  # no archive, no partial, no temporary folder
    download.download_task(4, tmp_path, mirror=url)  # already there: no second request
    assert len(handler.ranges) == 1


def test_an_interrupted_download_resumes_with_a_range_request(served, archive, tmp_path):
    url, handler = served
    (tmp_path / f".{NAME}.tar.part").write_bytes(archive[: len(archive) // 3])
    download.download_task(4, tmp_path, mirror=url, keep_archive=True)
    assert handler.ranges == [f"bytes={len(archive) // 3}-"]
    assert (tmp_path / f"{NAME}.tar").read_bytes() == archive
    assert (tmp_path / NAME / "dataset.json").is_file()


def test_a_server_without_ranges_restarts_the_download(served, archive, tmp_path):
    url, handler = served
    handler.honour_ranges = False
    (tmp_path / f".{NAME}.tar.part").write_bytes(b"stale bytes")
    download.download_task(4, tmp_path, mirror=url)
    assert (tmp_path / NAME / "dataset.json").is_file()


def test_a_checksum_mismatch_removes_the_download_and_extracts_nothing(served, monkeypatch, tmp_path):
    url, _ = served
    monkeypatch.setitem(download.MSD_TASKS, 4, (NAME, "0" * 32))
    with pytest.raises(download.DownloadError, match=f"^{NAME}: checksum mismatch"):
        download.download_task(4, tmp_path, mirror=url)
    assert list(tmp_path.iterdir()) == []


def test_an_archive_member_outside_the_dataset_folder_is_refused(mirror, monkeypatch, tmp_path):
    url, handler = mirror
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    handler.files[f"{NAME}.tar"] = buffer.getvalue()
    monkeypatch.setitem(download.MSD_TASKS, 4, (NAME, hashlib.md5(buffer.getvalue()).hexdigest()))
    with pytest.raises(download.DownloadError, match="outside"):
        download.download_task(4, tmp_path / "out", mirror=url)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / NAME).exists()


def test_an_archive_the_user_placed_is_used_and_left_in_place(served, archive, tmp_path):
    url, handler = served
    (tmp_path / f"{NAME}.tar").write_bytes(archive)
    download.download_task(4, tmp_path, mirror=url)
    assert handler.ranges == []  # nothing fetched
    assert (tmp_path / f"{NAME}.tar").read_bytes() == archive and (tmp_path / NAME / "dataset.json").is_file()


def test_a_placed_archive_that_does_not_verify_is_refused_and_kept(served, tmp_path):
    url, handler = served
    (tmp_path / f"{NAME}.tar").write_bytes(b"the user's own file")
    with pytest.raises(download.DownloadError, match=f"^{NAME}: .*{NAME}.tar is not the MSD archive"):
        download.download_task(4, tmp_path, mirror=url)
    assert (tmp_path / f"{NAME}.tar").read_bytes() == b"the user's own file" and handler.ranges == []


def test_a_non_empty_task_folder_without_dataset_json_is_kept_and_named(served, tmp_path, capsys):
    url, handler = served
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "notes.txt").write_text("the user's")
    assert cli.main(["download", "--task", "4", "--out", str(tmp_path), "--mirror", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnunet-ray download: error: {NAME}: {tmp_path / NAME} exists "
                                               "without dataset.json and is not empty")
    assert sorted(p.name for p in tmp_path.rglob("*")) == [NAME, "notes.txt"] and handler.ranges == []
    (tmp_path / NAME / "notes.txt").unlink()  # an empty folder is the task's to fill
    assert download.download_task(4, tmp_path, mirror=url) == tmp_path / NAME


def test_extraction_drops_setuid_bits(mirror, monkeypatch, tmp_path):
    url, handler = mirror
    raw = make_synthetic_task(SynthConfig(out=str(tmp_path / "src" / NAME), cases=2, test=1, size=16))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(raw, arcname=NAME)
        info = tarfile.TarInfo(f"{NAME}/run.sh")
        info.size, info.mode = 2, 0o4755  # setuid, as a hostile archive would ship it
        tar.addfile(info, io.BytesIO(b"x\n"))
    handler.files[f"{NAME}.tar"] = buffer.getvalue()
    monkeypatch.setitem(download.MSD_TASKS, 4, (NAME, hashlib.md5(buffer.getvalue()).hexdigest()))
    target = download.download_task(4, tmp_path / "out", mirror=url)
    assert (target / "run.sh").stat().st_mode & 0o7000 == 0


def test_cli_download_prints_the_dataset_folder(served, tmp_path, capsys):
    url, _ = served
    assert cli.main(["download", "--task", "04", "--out", str(tmp_path), "--mirror", url]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / NAME)


@pytest.mark.parametrize("argv, message", [
    (["download", "--task", "11", "--out", "x"], "--task: MSD tasks are 1-10"),
    (["download", "--task", "4"], "--out: is required"),
])
def test_cli_download_bad_options_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == f"nnunet-ray download: error: {message}"


def test_cli_download_from_an_unreachable_mirror_fails_with_one_line(tmp_path, capsys):
    assert cli.main(["download", "--task", "4", "--out", str(tmp_path), "--mirror", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnunet-ray download: error: {NAME}: http://127.0.0.1:9/")
