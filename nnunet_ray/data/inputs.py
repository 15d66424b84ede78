"""The cases to predict in a ``--input`` folder: a dataset folder's test cases, or a bare folder of images.

- A folder holding ``dataset.json`` (MSD v1 or nnU-Net v2, see :mod:`nnunet_ray.data.dataset`): its test cases.
- Any other folder: its NIfTI files. Names ending in ``_0000``, ``_0001``, ... (nnU-Net v2's channel suffix) are
  grouped into one case per prefix, one file per channel; otherwise each file is one case (3D, or 4D with the
  channels last, as MSD stores multi-modal images). Names like ``amos_0001`` (AMOS, WORD) number cases, not channels:
  grouping needs every case to have its ``_0000``, and for a one-channel model every case exactly one file.

Files are not opened here: a broken file is that case's problem, reported when it is read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nnunet_ray.data.dataset import DATASET_FILE, NIFTI_SUFFIXES, load_dataset
from nnunet_ray.data.types import CaseFiles, DatasetError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def strip_nifti_suffix(name: str) -> str | None:
    """``case.nii.gz`` -> ``case``; None for a name that is not a NIfTI file."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def input_cases(folder: str | Path, *, channels: int | None = None) -> tuple[CaseFiles, ...]:
    """The cases to predict in ``folder``, sorted by case id.

    Args:
        folder: a dataset folder (with dataset.json) or a folder of NIfTI images.
        channels: the model's input channels, when known: tells case numbers from channel suffixes.

    Returns:
        CaseFiles without labels.

    Raises:
        DatasetError: the folder is missing, holds no images, a v2 case lacks a channel file, or a dataset
            folder has no test cases.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: input folder not found")
    if (root / DATASET_FILE).is_file():
        dataset = load_dataset(root)
        if not dataset.test:
            raise DatasetError(f"{root}: dataset.json lists no test cases; point --input at a folder of images "
                               "(e.g. imagesTr) to predict those")
        return dataset.test
    return _bare_folder(root, channels)


def _bare_folder(root: Path, channels: int | None) -> tuple[CaseFiles, ...]:
    stems = {}
    for path in sorted(root.iterdir()):
        stem = strip_nifti_suffix(path.name)
        if stem is not None and not path.name.startswith(".") and path.is_file():
            stems[stem] = path
    if not stems:
        raise DatasetError(f"{root}: no NIfTI images (.nii.gz / .nii) in the input folder")
    matches = {stem: match for stem in stems if (match := _CHANNEL.match(stem))}
    grouped: dict[str, dict[int, Path]] = {}
    for stem, match in matches.items():
        grouped.setdefault(match["case"], {})[int(match["channel"])] = stems[stem]
    if len(matches) < len(stems) or not _channel_suffixes(grouped, channels):  # one file per case
        return tuple(CaseFiles(stem, (path,)) for stem, path in stems.items())
    cases = []
    for case_id, files in sorted(grouped.items()):
        if sorted(files) != list(range(len(files))):
            raise DatasetError(f"{root}: case {case_id} has channel files {sorted(files)}; expected "
                               f"_0000.._{len(files) - 1:04d} without gaps")
        cases.append(CaseFiles(case_id, tuple(files[c] for c in sorted(files))))
    return tuple(cases)


def _channel_suffixes(grouped: dict[str, dict[int, Path]], channels: int | None) -> bool:
    """Whether the ``_NNNN`` endings are v2 channel suffixes: every case has its ``_0000``, and a one-channel model's
    cases one file each (else they number the cases: ``amos_0001``, ``amos_0002``, ...)."""
    if not all(0 in files for files in grouped.values()):
        return False
    return channels != 1 or all(len(files) == 1 for files in grouped.values())


def input_fingerprint(case: CaseFiles) -> list[list[str | int | None]] | None:
    """``[name, size in bytes, modification time in ns]`` of each image file (None when one cannot be read), so an
    image replaced since its prediction is predicted again. Size and time rather than a content hash: one ``stat``
    per file, where hashing would read every image of a large folder again on each rerun."""
    try:
        return [[path.name, (stat := os.stat(path)).st_size, stat.st_mtime_ns] for path in case.images]
    except OSError:
        return None
