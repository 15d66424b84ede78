"""The raw images a prediction reads (``predict --input``, ``evaluate --cv --data``): a folder path, read in place
(a shared filesystem on a multi-node cluster), or a folder on object storage (``s3://``, ``gs://``).

A folder on object storage is never copied whole. The driver finds its cases from one listing, and each actor
downloads the case it is about to predict into scratch and removes it afterwards. Why per case, where training
stages a whole copy per node (``nnunet_ray.data.staging``): training reads every case many times on every node, so a
local copy pays for itself; a prediction reads each case once, on one actor. With 300 test cases on 5 nodes,
staging would download all 300 to every node (five times the traffic, and the disk for it) before the first case
starts; per case, each image crosses the network once, to the node predicting it, and the pool starts at once. A
rerun downloads nothing already predicted: ``predict.json`` records each case with its images' listing (name, size,
modification time) and a rerun skips it.

The driver finds the cases without downloading an image: a local mirror of the listing (an empty file for each
NIfTI name, and the real ``dataset.json``) goes through the same discovery as a local folder (``input_cases``,
``load_dataset``), so MSD and nnU-Net v2 dataset roots and bare folders of images read the same either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from nnunet_ray.data import storage
from nnunet_ray.data.dataset import DATASET_FILE, load_dataset
from nnunet_ray.data.inputs import input_cases, input_fingerprint, strip_nifti_suffix
from nnunet_ray.data.types import CaseError, CaseFiles, DatasetError, DatasetInfo


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Cases to predict and where their image files are.

    Attributes:
        cases: the cases; their paths are read in place when ``source`` is empty, else relative to ``source``.
        source: "" (paths on this machine or a shared filesystem), or the URI of the folder the paths are under.
        listing: with a ``source``, each NIfTI file's relative path -> ``(bytes, modification time in ns)``.
    """

    cases: tuple[CaseFiles, ...]
    source: str = ""
    listing: Mapping[str, tuple[int, int | None]] = dataclasses.field(default_factory=dict)

    def fingerprint(self, case: CaseFiles) -> list[list[str | int | None]] | None:
        """``input_fingerprint`` of ``case`` (``[name, bytes, mtime ns]`` per image), from the listing on a URI."""
        if not self.source:
            return input_fingerprint(case)
        found = [self.listing.get(path.as_posix()) for path in case.images]
        stats = [stat for stat in found if stat is not None]
        return None if len(stats) < len(found) else [[path.name, *stat] for path, stat in zip(case.images, stats)]

    def location(self, path: Path) -> str:
        """Where one of the cases' files is (a path, or a URI under ``source``)."""
        return storage.join(self.source, *path.parts) if self.source else str(path)

    def has(self, path: Path) -> bool:
        """Whether one of the cases' files exists (as this machine sees it; on a URI: in the listing)."""
        return path.as_posix() in self.listing if self.source else path.is_file()

    def only(self, cases: Iterable[CaseFiles]) -> Inputs:
        """The same source with only ``cases`` (some of its own)."""
        return dataclasses.replace(self, cases=tuple(cases))


def open_inputs(location: str, *, channels: int | None = None) -> Inputs:
    """Driver: the cases to predict in ``location`` (a path or URI): a dataset folder's test cases, or the images of
    a bare folder (see ``nnunet_ray.data.inputs``; ``channels``: the model's input channels).

    Raises:
        DatasetError: the folder is missing or holds no cases, naming ``location``.
    """
    if not storage.is_uri(location):
        return Inputs(input_cases(location, channels=channels))
    with _mirror(location) as (root, listing):
        return _relative(input_cases(root, channels=channels), root, location, listing)


@contextlib.contextmanager
def labelled_dataset(location: str) -> Iterator[tuple[DatasetInfo, Inputs]]:
    """Driver: the raw dataset at ``location`` with its training labels on this machine (scoring reads them), and
    its training cases as ``Inputs`` (the actors read their images). A URI's labels are downloaded to a temporary
    folder (the dataset's root while the block runs), its images are not.

    Raises:
        DatasetError: no dataset.json there, or it is invalid, naming ``location``.
    """
    if not storage.is_uri(location):
        dataset = load_dataset(location)
        yield dataset, Inputs(dataset.training)
        return
    with _mirror(location) as (root, listing):
        dataset = load_dataset(root)
        for case in dataset.training:  # a label missing from the listing stays missing: scoring names it
            assert case.label is not None  # load_dataset gives every training case a label
            relative = case.label.relative_to(root).as_posix()
            if relative in listing:
                storage.download(storage.join(location, relative), case.label)
        yield dataset, _relative(dataset.training, root, location, listing)


@contextlib.contextmanager
def _mirror(location: str) -> Iterator[tuple[Path, dict[str, tuple[int, int | None]]]]:
    """A temporary local folder named as ``location`` holding an empty file for each NIfTI file under it and its
    real dataset.json; yields it and the listing. A DatasetError raised in the block names ``location``, not the
    mirror."""
    if not storage.is_dir(location):
        raise DatasetError(f"{storage.display(location)}: input folder not found")
    fs, base = storage.resolve(location)
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_listing_") as tmp:
        root = Path(tmp).resolve() / storage.basename(location)
        root.mkdir()
        listing = {}
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            relative = info.path[len(base.rstrip("/")) + 1:]
            if info.type == pafs.FileType.File and strip_nifti_suffix(PurePosixPath(relative).name) is not None:
                listing[relative] = (info.size, info.mtime_ns)
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                (root / relative).touch()
        if storage.is_file(storage.join(location, DATASET_FILE)):
            storage.download(storage.join(location, DATASET_FILE), root / DATASET_FILE)
        try:
            yield root, listing
        except DatasetError as err:
            raise DatasetError(str(err).replace(str(root), storage.display(location))) from err


def _relative(cases: Iterable[CaseFiles], root: Path, source: str,
              listing: Mapping[str, tuple[int, int | None]]) -> Inputs:
    """``Inputs`` of ``cases`` found in the mirror ``root`` of ``source``: their paths made relative to it."""
    def inside(path: Path | None) -> Path | None:
        return None if path is None else path.relative_to(root)
    return Inputs(tuple(CaseFiles(c.case_id, tuple(p.relative_to(root) for p in c.images), inside(c.label))
                        for c in cases), source, dict(listing))


@contextlib.contextmanager
def local_case(case: CaseFiles, source: str) -> Iterator[CaseFiles]:
    """Actor: ``case`` with its images on this node: as it is when ``source`` is empty, else downloaded from under
    ``source`` into scratch (same file names), removed when the block ends.

    Raises:
        CaseError: an image could not be downloaded, naming it.
    """
    if not source:
        yield case
        return
    with tempfile.TemporaryDirectory(prefix="nnunet_ray_case_") as tmp:
        images = []
        for path in case.images:
            local = Path(tmp) / path
            try:
                storage.download(storage.join(source, *path.parts), local)
            except OSError as err:  # FileNotFoundError or StorageError: both name the object
                raise CaseError(case.case_id, f"cannot download an image: {str(err).splitlines()[0]}") from err
            images.append(local)
        yield CaseFiles(case.case_id, tuple(images))
