"""Local folders standing in for a location, path or URI: a read-only copy to hand to code that reads files, a
scratch folder whose files are published to the location (object storage takes whole objects, not appends), and a
folder of label files named by case id."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow.fs as pafs

from nnunet_ray.data.storage import absolute, is_uri, join, resolve, upload
from nnunet_ray.data.types import CaseFiles


def _relative_files(location: str | Path) -> list[tuple[str, pafs.FileInfo]]:
    """(path relative to ``location``, info) of every file under the folder ``location``, recursively."""
    fs, root = resolve(location)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
    return [(info.path[len(root.rstrip("/")) + 1:], info) for info in infos if info.type == pafs.FileType.File]


@contextlib.contextmanager
def local_copy(location: str | Path, keep: Callable[[str], bool] = lambda relative: True) -> Iterator[Path]:
    """A local folder with the content of the folder ``location``: the folder itself when it is a path; for a URI
    a temporary copy of the files whose relative path ``keep`` accepts (removed afterwards). Read-only use."""
    if not is_uri(location):
        yield Path(absolute(location))
        return
    fs, _ = resolve(location)
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_copy_") as tmp:
        for relative, info in _relative_files(location):
            if keep(relative):
                (Path(tmp) / relative).parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(info.path, str(Path(tmp) / relative), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
        yield Path(tmp)


@contextlib.contextmanager
def writable_folder(location: str | Path) -> Iterator[Path]:
    """A local folder whose files end up in ``location``: the folder itself when it is a path; for a URI a
    temporary folder uploaded when the block ends without an error, files in the order they were written (so a
    file a reader takes as "done" is uploaded last, as it was written last)."""
    if not is_uri(location):
        Path(absolute(location)).mkdir(parents=True, exist_ok=True)
        yield Path(absolute(location))
        return
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_out_") as tmp:
        yield Path(tmp)
        written = sorted((p for p in Path(tmp).rglob("*") if p.is_file()), key=lambda p: (p.stat().st_mtime_ns, p))
        for path in written:
            upload(path, join(location, *path.relative_to(tmp).parts))


@contextlib.contextmanager
def labels_by_case_id(cases: Iterable[CaseFiles]) -> Iterator[Path]:
    """A temporary folder of links ``<case_id>.nii.gz`` (or ``.nii``) to the cases' local label files, for code that
    pairs predictions with labels by file name: a dataset.json may name its label files otherwise."""
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_labels_") as tmp:
        for case in cases:
            if case.label is None:
                continue
            suffix = ".nii" if case.label.name.endswith(".nii") else ".nii.gz"
            Path(tmp, case.case_id + suffix).symlink_to(Path(case.label).resolve())
        yield Path(tmp)
