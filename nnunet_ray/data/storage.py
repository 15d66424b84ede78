"""Files under a root that is a local or shared-filesystem path or a cloud URI, through ``pyarrow.fs``.

``--data`` and ``--results`` may be ``/mnt/nfs/results``, ``s3://bucket/results`` or ``gs://bucket/results``
(pyarrow's filesystems, the ones Ray Train itself uses for ``storage_path``). A URI may carry pyarrow's S3
options as a query, kept at the end when paths are joined, e.g.
``s3://bucket/results?endpoint_override=127.0.0.1:9000&scheme=http`` for an S3-compatible server.
Credentials come from the environment as usual (instance role, ``AWS_*`` variables, ``~/.aws``); a URI's
``KEY:SECRET@`` part is taken out by ``nnunet_ray.data.credentials`` before a command runs, so locations carried
through a run (and written into its records) hold none.

Writes are atomic either way: a local file is written under a temporary name and renamed
(``nnunet_ray.data.atomic``); an object store publishes an object only when its upload completes. A write, upload
or download that fails (the store unreachable, access denied) raises ``StorageError``: one line naming the object.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from nnunet_ray.config import ConfigError, flag_name
from nnunet_ray.data.atomic import atomic_path

# The user part of a URI: KEY:SECRET@ (a secret may hold an unescaped "/": AWS secrets do, bucket names cannot hold
# ":") or USER@; right after the scheme, so an "@" in an object's name is never taken for one.
USER_PART = r"(?:[^/@?]*:[^@?]*|[^/@?]*)@"
_CREDENTIALS = re.compile(r"(://)" + USER_PART)  # s3://key:secret@bucket -> s3://bucket in messages
UPLOAD_CHUNK = 8 << 20  # bytes per write to an object store's output stream


class StorageError(OSError):
    """A write, upload or download failed (store unreachable, access denied, ...); the message names the object."""


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` is a URI (``s3://``, ``gs://``, ``file://``...) rather than a plain path."""
    return "://" in str(location)


def display(location: str | Path) -> str:
    """``location`` without credentials or query options, for messages and logs."""
    return _CREDENTIALS.sub(r"\1", str(location)).split("?", 1)[0]


def absolute(location: str | Path) -> str:
    """A URI unchanged; a path made absolute (Ray workers do not share the driver's working directory)."""
    return str(location) if is_uri(location) else str(Path(location).expanduser().resolve())


def join(location: str | Path, *parts: str) -> str:
    """``location`` with ``parts`` appended; a URI keeps its ``?query`` at the end."""
    if not is_uri(location):
        return str(Path(location, *parts))
    base, sep, query = str(location).partition("?")
    tail = "/".join(p.strip("/") for p in parts if p)
    return f"{base.rstrip('/')}/{tail}{sep}{query}" if tail else str(location)


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it that ``location`` names.

    Raises:
        ValueError: the URI scheme is unknown or its options are invalid (pyarrow's message).
    """
    if is_uri(location):
        try:
            fs_path: tuple[pafs.FileSystem, str] = pafs.FileSystem.from_uri(str(location))
            return fs_path
        except (ValueError, OSError) as err:  # pyarrow raises ArrowInvalid (a ValueError) or an OSError
            raise ValueError(f"{display(location)}: cannot open ({_reason(err, location)})") from err
    return pafs.LocalFileSystem(), absolute(location)


def _reason(err: BaseException, location: str | Path) -> str:
    """The first line of ``err``'s message, with no credentials (pyarrow quotes a URI it cannot parse verbatim)."""
    text = str(err).replace(str(location), display(location))
    lines = _CREDENTIALS.sub(r"\1", text).strip().splitlines()
    return lines[0] if lines else type(err).__name__


@contextlib.contextmanager
def _naming(location: str | Path, action: str) -> Iterator[None]:
    """Turn a failed transfer into a ``StorageError`` naming ``location`` (a missing source stays FileNotFoundError)."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except OSError as err:
        raise StorageError(f"{display(location)}: cannot {action} ({_reason(err, location)})") from err


def _info(location: str | Path) -> pafs.FileInfo:
    fs, path = resolve(location)
    return fs.get_file_info(path)


def exists(location: str | Path) -> bool:
    """Whether a file or folder exists at ``location``."""
    return bool(_info(location).type != pafs.FileType.NotFound)


def is_file(location: str | Path) -> bool:
    """Whether a file exists at ``location``."""
    return bool(_info(location).type == pafs.FileType.File)


def is_dir(location: str | Path) -> bool:
    """Whether a folder exists at ``location`` (on an object store: any object has this prefix)."""
    return bool(_info(location).type == pafs.FileType.Directory)


def list_names(location: str | Path) -> list[str]:
    """Names of the files and folders directly inside ``location``, sorted (empty if it does not exist)."""
    fs, path = resolve(location)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    return sorted(info.base_name for info in fs.get_file_info(selector))


def read_bytes(location: str | Path) -> bytes:
    """The content of the file at ``location``.

    Raises:
        FileNotFoundError: there is no file there.
        StorageError: it could not be read, naming it.
    """
    fs, path = resolve(location)
    with _naming(location, "read"):
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise FileNotFoundError(f"{display(location)}: no such file")
        with fs.open_input_stream(path, compression=None) as stream:  # the bytes stored, even of a .gz
            data: bytes = stream.read()
            return data


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write ``data`` to ``location`` atomically, creating folders as needed.

    Raises:
        StorageError: the write failed (nothing is published at ``location``), naming it.
    """
    if not is_uri(location):
        with atomic_path(location) as tmp:
            tmp.write_bytes(data)
        return
    fs, path = resolve(location)
    # compression=None: the bytes given, as a local file holds them (pyarrow would gzip a .gz name again).
    with _naming(location, "write"), fs.open_output_stream(path, compression=None) as stream:
        stream.write(data)  # published when the upload completes


def read_text(location: str | Path) -> str:
    """The UTF-8 text of the file at ``location``."""
    return read_bytes(location).decode("utf-8")


def write_text(location: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``location`` atomically."""
    write_bytes(location, text.encode("utf-8"))


def read_json(location: str | Path) -> Any:
    """The JSON content of the file at ``location``."""
    return json.loads(read_text(location))


def write_json(location: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (plus a newline) to ``location`` atomically."""
    write_text(location, json.dumps(obj, indent=indent) + "\n")


def upload(local: str | Path, location: str | Path) -> None:
    """Copy a local file, or a folder recursively, to ``location`` (files of the same name are replaced).

    Raises:
        StorageError: a file's upload failed, naming its object (an object store publishes no half object, and
            keeps an earlier object of that name); the files before it are uploaded.
    """
    fs, path = resolve(location)
    if isinstance(fs, pafs.LocalFileSystem):  # a path (or file:// URI): pyarrow's copy, its folders created first
        local = Path(local)
        with _naming(location, "write"):
            (Path(path) if local.is_dir() else Path(path).parent).mkdir(parents=True, exist_ok=True)
            pafs.copy_files(str(local.resolve()), path, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
        return
    upload_to(local, fs, path, shown=display(location))


def upload_to(local: str | Path, fs: pafs.FileSystem, path: str, *, shown: str = "") -> None:
    """``upload`` to ``path`` inside an opened object store ``fs`` (e.g. Ray Train's storage filesystem).

    Each file is one output stream whose close (where the upload completes) is checked: pyarrow's ``copy_files``
    ignores a failed close, reporting success for an object it never published (pyarrow 26, S3).

    Args:
        shown: how messages name ``path`` (default ``<filesystem type>://<path>``).

    Raises:
        StorageError: naming the object whose upload failed.
    """
    local = Path(local)
    shown = (shown or f"{fs.type_name}://{path}").rstrip("/")
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for source in files:
        relative = "" if source == local else "/" + source.relative_to(local).as_posix()
        with _naming(shown + relative, "upload"), source.open("rb") as data, \
                fs.open_output_stream(path.rstrip("/") + relative, compression=None) as stream:
            shutil.copyfileobj(data, stream, UPLOAD_CHUNK)


def download(location: str | Path, local: str | Path) -> None:
    """Copy the file, or the folder recursively, at ``location`` to the local path ``local``.

    Raises:
        FileNotFoundError: nothing exists at ``location``.
        StorageError: the download failed, naming ``location``.
    """
    fs, path = resolve(location)
    with _naming(location, "download"):
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{display(location)}: not found")
        local = Path(local)
        (local if kind == pafs.FileType.Directory else local.parent).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(local.resolve()), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())


def delete(location: str | Path) -> None:
    """Remove the file or folder (recursively) at ``location``; nothing there is not an error."""
    fs, path = resolve(location)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def basename(location: str | Path) -> str:
    """The last component of ``location`` (a folder's name), without a URI's query or a trailing slash."""
    return PurePosixPath(display(location).rstrip("/")).name


def parent(location: str | Path) -> str:
    """The folder holding ``location``; a URI keeps its ``?query``."""
    if not is_uri(location):
        return str(Path(location).parent)
    base, sep, query = str(location).partition("?")
    return f"{base.rstrip('/').rsplit('/', 1)[0]}{sep}{query}"


def check_writable_here(location: str | Path, flag: str) -> None:
    """Before Ray starts: a local ``location`` (``--results``, ``--out``) is a folder this process may create or write
    in; checked without writing anything, so a refusal later leaves no trace. A URI is checked when first written.

    Raises:
        ConfigError: naming the config field's flag, the path and the problem (a file in the way, no permission).
    """
    if is_uri(location):
        return
    path = Path(absolute(location))
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing == path and not path.is_dir():
        raise ConfigError(f"{flag_name(flag)}: {path} exists and is not a folder")
    if not existing.is_dir():
        raise ConfigError(f"{flag_name(flag)}: {path} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag_name(flag)}: {path}: no permission to write in {existing}")
