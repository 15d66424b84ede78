"""Files under a local root and under an s3:// root (a real S3-compatible server on 127.0.0.1): same behaviour."""

from __future__ import annotations

import pytest

from nnunet_ray.data import storage
from nnunet_ray.data.local_views import local_copy, writable_folder


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    return str(tmp_path / "root") if request.param == "local" else request.getfixturevalue("s3_root")


@pytest.mark.parametrize("location, parts, expected", [
    ("/a/b", ("c", "d.json"), "/a/b/c/d.json"),
    ("s3://bucket/root", ("c", "d.json"), "s3://bucket/root/c/d.json"),
    ("s3://bucket/root/", ("c",), "s3://bucket/root/c"),
    ("s3://bucket/root?endpoint_override=h:1&scheme=http", ("c",), "s3://bucket/root/c?endpoint_override=h:1&scheme=http"),
    ("gs://bucket", (), "gs://bucket"),
])
def test_join_appends_parts_and_keeps_the_query_last(location, parts, expected):
    assert storage.join(location, *parts) == expected


def test_display_hides_credentials_and_options():
    assert storage.display("s3://key:secret@bucket/root?endpoint_override=h:1") == "s3://bucket/root"
    assert storage.display("/data/x") == "/data/x"


def test_write_read_list_and_delete(root):
    storage.write_json(storage.join(root, "a", "b.json"), {"x": [1, 2]})
    storage.write_text(storage.join(root, "a", "c.txt"), "hello")
    assert storage.read_json(storage.join(root, "a", "b.json")) == {"x": [1, 2]}
    assert storage.read_text(storage.join(root, "a", "c.txt")) == "hello"
    assert storage.list_names(storage.join(root, "a")) == ["b.json", "c.txt"]
    assert storage.is_dir(storage.join(root, "a")) and storage.is_file(storage.join(root, "a", "b.json"))
    assert not storage.exists(storage.join(root, "missing"))
    storage.delete(storage.join(root, "a"))
    assert not storage.exists(storage.join(root, "a", "b.json"))
    storage.delete(storage.join(root, "a"))  # nothing there: not an error


def test_reading_a_missing_file_names_it_without_credentials(root):
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        storage.read_bytes(storage.join(root, "nope.json"))
    assert "test:test" not in str(info.value)


def test_upload_and_download_a_folder_round_trip(root, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "x.npy").write_bytes(b"\x00\x01" * 1000)
    (src / "sub" / "y.json").write_text("{}")
    storage.upload(src, storage.join(root, "copy"))
    storage.upload(src / "x.npy", storage.join(root, "single", "x.npy"))
    storage.download(storage.join(root, "copy"), tmp_path / "back")
    assert sorted(str(p.relative_to(tmp_path / "back")) for p in (tmp_path / "back").rglob("*")) == \
        ["sub", "sub/y.json", "x.npy"]
    assert (tmp_path / "back" / "x.npy").read_bytes() == (src / "x.npy").read_bytes()
    assert storage.read_bytes(storage.join(root, "single", "x.npy")) == (src / "x.npy").read_bytes()
    with pytest.raises(FileNotFoundError):
        storage.download(storage.join(root, "nothing"), tmp_path / "none")


def test_writing_to_a_missing_bucket_fails_with_the_reason(s3_server):
    with pytest.raises(OSError, match="(?i)bucket"):
        storage.write_text(f"s3://test:test@no-such-bucket/x?endpoint_override={s3_server}&scheme=http", "x")


def test_an_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot open"):
        storage.exists("nosuchfs://bucket/x")


@pytest.mark.parametrize("location, parent, name", [
    ("/a/b/c", "/a/b", "c"),
    ("s3://k:s@bucket/root/exp?endpoint_override=h:1", "s3://k:s@bucket/root?endpoint_override=h:1", "exp"),
    ("gs://bucket/exp/", "gs://bucket", "exp"),
])
def test_parent_keeps_credentials_and_options_and_basename_drops_them(location, parent, name):
    assert storage.parent(location) == parent
    assert storage.basename(location) == name


def test_local_copy_holds_the_kept_files_and_nothing_else(root):
    for name in ("run/epoch_0001/model.pt", "run/tensorboard/events", "best.json"):
        storage.write_text(storage.join(root, *name.split("/")), name)
    with local_copy(root, keep=lambda relative: not relative.startswith("run/tensorboard")) as local:
        files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
        if storage.is_uri(root):  # a copy of what was kept
            assert files == ["best.json", "run/epoch_0001/model.pt"]
        else:  # the folder itself, nothing copied
            assert str(local) == root and "run/tensorboard/events" in files
        assert (local / "run" / "epoch_0001" / "model.pt").read_text() == "run/epoch_0001/model.pt"


def test_writable_folder_publishes_its_files_only_when_the_block_succeeds(root):
    with writable_folder(storage.join(root, "out")) as folder:
        (folder / "case.npz").write_text("probabilities")
        (folder / "case.nii.gz").write_text("label map, the done-marker, written last")
    assert storage.list_names(storage.join(root, "out")) == ["case.nii.gz", "case.npz"]
    assert storage.read_text(storage.join(root, "out", "case.npz")) == "probabilities"
    if storage.is_uri(root):  # a failed block uploads nothing (a local folder is written in place)
        with pytest.raises(RuntimeError), writable_folder(storage.join(root, "failed")) as folder:
            (folder / "half.npz").write_text("x")
            raise RuntimeError("the prediction failed")
        assert storage.list_names(storage.join(root, "failed")) == []


def test_gz_files_keep_their_bytes_whichever_way_they_travel(root, tmp_path):
    """pyarrow's streams gzip / gunzip a ``.gz`` name by default: a ``.nii.gz`` must stay the bytes it is."""
    gz = b"\x1f\x8b\x08\x00 not really gzip"
    storage.write_bytes(storage.join(root, "written.nii.gz"), gz)
    assert storage.read_bytes(storage.join(root, "written.nii.gz")) == gz
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "case.nii.gz").write_bytes(gz)
    storage.upload(tmp_path / "src", storage.join(root, "uploaded"))
    assert storage.read_bytes(storage.join(root, "uploaded", "case.nii.gz")) == gz
    storage.download(storage.join(root, "written.nii.gz"), tmp_path / "back.nii.gz")
    assert (tmp_path / "back.nii.gz").read_bytes() == gz


def test_an_unparseable_uri_is_refused_without_its_secret():
    with pytest.raises(ValueError, match="cannot open") as error:
        storage.exists("s3://AKID:se/cr3t@bucket/x")  # pyarrow quotes the URI it cannot parse
    assert "se/cr3t" not in str(error.value)
