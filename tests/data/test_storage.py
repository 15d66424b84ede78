"""Files under a local root and under an s3:// root (a real S3-compatible server on 127.0.0.1): same behaviour."""

from __future__ import annotations

import pytest

from nnunet_ray.data import storage


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
