"""Read a raw dataset folder's ``dataset.json`` into a :class:`DatasetInfo`.

Two layouts are understood:

- **MSD v1** (Medical Segmentation Decathlon): ``modality`` {"0": "CT"}, ``labels`` {"0": "background", ...},
  ``training`` [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}], ``test`` ["./imagesTs/y.nii.gz"].
  Multi-modal cases are one 4D NIfTI each. The case id is the image file name without ``.nii.gz`` / ``.nii``.
- **nnU-Net v2**: ``channel_names`` {"0": "T2"}, ``labels`` {"background": 0, ...}, ``file_ending`` ".nii.gz";
  cases are discovered in ``imagesTr/<case>_0000<ending>`` (one file per channel, ``_0001``... for the others),
  labels in ``labelsTr/<case><ending>``, test images in ``imagesTs``.

Every path must stay inside the dataset folder (after following symlinks): datasets are copied between
machines, and a path that escapes would silently read someone else's files. Files are NOT opened here; a
missing or broken file is one case's problem (``CaseError`` when it is read), not the dataset's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nnunet_ray.data.types import CaseFiles, DatasetError, DatasetInfo

DATASET_FILE = "dataset.json"  # a raw dataset folder's description (MSD v1 or nnU-Net v2)
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def load_dataset(root: str | Path) -> DatasetInfo:
    """Describe the dataset folder ``root`` from its ``dataset.json`` (MSD v1 or nnU-Net v2).

    Args:
        root: the raw dataset folder, e.g. ``/data/Task04_Hippocampus``; its name becomes ``DatasetInfo.name``.

    Returns:
        DatasetInfo with absolute paths, training and test cases sorted by case id.

    Raises:
        DatasetError: the folder or dataset.json is missing, the JSON is invalid, a key is missing or malformed,
            a path points outside the folder, or a case id appears twice. One line, naming what to fix.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    folder = folder.resolve()
    json_path = folder / DATASET_FILE
    meta = _read_json(json_path)
    if "channel_names" in meta or "file_ending" in meta:
        return _load_v2(folder, meta, json_path)
    return _load_msd(folder, meta, json_path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path}: dataset.json not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level, got {type(meta).__name__}")
    return meta


def _require(meta: dict[str, Any], key: str, kind: type, *, json_path: Path) -> Any:
    if key not in meta:
        raise DatasetError(f"{json_path}: missing key '{key}'")
    value = meta[key]
    if not isinstance(value, kind):
        raise DatasetError(f"{json_path}: '{key}' must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _index_keyed(raw: dict[str, Any], key: str, json_path: Path) -> dict[int, Any]:
    """{"0": a, "1": b} -> {0: a, 1: b}, requiring keys 0..n-1 without gaps."""
    try:
        out = {int(k): v for k, v in raw.items()}
    except ValueError as exc:
        raise DatasetError(f"{json_path}: '{key}' keys must be integers like \"0\", got {list(raw)}") from exc
    if sorted(out) != list(range(len(out))) or not out:
        raise DatasetError(f"{json_path}: '{key}' must be numbered 0..n-1 without gaps, got {sorted(out)}")
    return dict(sorted(out.items()))


def _modalities(raw: dict[str, Any], key: str, json_path: Path) -> tuple[str, ...]:
    channels = _index_keyed(raw, key, json_path)
    return tuple(str(name) for name in channels.values())


def _check_labels(labels: dict[int, str], json_path: Path) -> dict[int, str]:
    if len(labels) < 2:
        raise DatasetError(f"{json_path}: 'labels' needs background (0) and at least one foreground class")
    return labels


def _labels_v2(raw: dict[str, Any], json_path: Path) -> dict[int, str]:
    """nnU-Net v2 {"background": 0, "organ": 1} -> {0: "background", 1: "organ"}."""
    by_index: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "ignore":  # v2's sparse annotation: no loss, no metric there; training it as a class would be wrong
            raise DatasetError(f"{json_path}: the 'ignore' label ({value}) is not supported (nnU-Net v2 leaves its "
                               "voxels out of the loss); relabel them or use nnU-Net v2 for this dataset")
        if isinstance(value, (list, tuple)):
            raise DatasetError(f"{json_path}: region-based labels are not supported ('{name}': {value}); "
                               "give each class one integer")
        if isinstance(value, bool) or not isinstance(value, int):
            raise DatasetError(f"{json_path}: label '{name}' must map to an integer, got {value!r}")
        if str(value) in by_index:
            raise DatasetError(f"{json_path}: labels '{by_index[str(value)]}' and '{name}' share the value {value}")
        by_index[str(value)] = name
    labels = {k: str(v) for k, v in _index_keyed(by_index, "labels", json_path).items()}
    return _check_labels(labels, json_path)


def _inside(root: Path, entry: Any, where: str) -> Path:
    """Resolve a dataset.json path entry against ``root``; reject anything that leaves the folder."""
    if not isinstance(entry, str) or not entry:
        raise DatasetError(f"{where}: expected a relative path string, got {entry!r}")
    if Path(entry).is_absolute():
        raise DatasetError(f"{where}: '{entry}' is an absolute path; paths must be relative to the dataset folder")
    path = (root / entry).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"{where}: '{entry}' resolves to {path}, outside the dataset folder {root}")
    return path


def _strip_nifti(name: str, where: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    raise DatasetError(f"{where}: '{name}' is not a NIfTI file name (.nii.gz or .nii)")


def _sorted_unique(cases: list[CaseFiles], what: str, json_path: Path) -> tuple[CaseFiles, ...]:
    cases = sorted(cases, key=lambda c: c.case_id)
    for a, b in zip(cases, cases[1:]):
        if a.case_id == b.case_id:
            raise DatasetError(f"{json_path}: case id '{a.case_id}' appears twice in {what}")
    return tuple(cases)


def _msd_images(root: Path, entry: Any, where: str) -> tuple[str, tuple[Path, ...]]:
    """An MSD image entry (a path, or a list of per-channel paths) -> (case id, paths)."""
    entries = entry if isinstance(entry, list) and entry else [entry]
    paths = tuple(_inside(root, e, where) for e in entries)
    return _strip_nifti(Path(entries[0]).name, where), paths


def _load_msd(root: Path, meta: dict[str, Any], json_path: Path) -> DatasetInfo:
    modalities = _modalities(_require(meta, "modality", dict, json_path=json_path), "modality", json_path)
    raw_labels = _index_keyed(_require(meta, "labels", dict, json_path=json_path), "labels", json_path)
    labels = _check_labels({k: str(v) for k, v in raw_labels.items()}, json_path)
    training = []
    for i, item in enumerate(_require(meta, "training", list, json_path=json_path)):
        where = f"{json_path}: training[{i}]"
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DatasetError(f"{where}: expected {{\"image\": ..., \"label\": ...}}, got {item!r}")
        case_id, images = _msd_images(root, item["image"], where)
        training.append(CaseFiles(case_id, images, _inside(root, item["label"], where)))
    if not training:
        raise DatasetError(f"{json_path}: 'training' is empty")
    test = []
    for i, item in enumerate(meta.get("test") or []):
        where = f"{json_path}: test[{i}]"
        case_id, images = _msd_images(root, item.get("image") if isinstance(item, dict) else item, where)
        test.append(CaseFiles(case_id, images))
    return DatasetInfo(name=root.name, root=root, modalities=modalities, labels=labels,
                       training=_sorted_unique(training, "training", json_path),
                       test=_sorted_unique(test, "test", json_path))


def _discover_v2(root: Path, folder: str, *, ending: str, n_channels: int,
                 labels: str | None) -> list[CaseFiles]:
    """Cases of an nnU-Net v2 folder: every ``<case>_0000<ending>`` names one case."""
    first = "_0000" + ending
    cases = []
    for path in sorted((root / folder).iterdir()):
        # Dot files are macOS resource forks (._x.nii.gz) and editor droppings, never images.
        if path.name.startswith(".") or not path.name.endswith(first) or len(path.name) == len(first):
            continue
        case_id = path.name[: -len(first)]
        images = tuple(_inside(root, f"{folder}/{case_id}_{c:04d}{ending}", f"{folder}/{path.name}")
                       for c in range(n_channels))
        label = None if labels is None else _inside(root, f"{labels}/{case_id}{ending}", f"{folder}/{path.name}")
        cases.append(CaseFiles(case_id, images, label))
    return cases


def _load_v2(root: Path, meta: dict[str, Any], json_path: Path) -> DatasetInfo:
    modalities = _modalities(_require(meta, "channel_names", dict, json_path=json_path), "channel_names", json_path)
    labels = _labels_v2(_require(meta, "labels", dict, json_path=json_path), json_path)
    ending = _require(meta, "file_ending", str, json_path=json_path)
    if not ending.startswith("."):
        raise DatasetError(f"{json_path}: 'file_ending' must start with a dot, like \".nii.gz\", got '{ending}'")
    if "dataset" in meta:
        raise DatasetError(f"{json_path}: the 'dataset' key (explicit file lists) is not supported; "
                           "put the files in imagesTr/labelsTr instead")
    if not (root / "imagesTr").is_dir():
        raise DatasetError(f"{root}: imagesTr folder not found")
    training = _discover_v2(root, "imagesTr", ending=ending, n_channels=len(modalities), labels="labelsTr")
    if not training:
        raise DatasetError(f"{root / 'imagesTr'}: no training images named <case>_0000{ending}")
    expected = meta.get("numTraining")
    if expected is not None and expected != len(training):
        raise DatasetError(f"{json_path}: numTraining is {expected} but imagesTr holds {len(training)} cases")
    test = []
    if (root / "imagesTs").is_dir():
        test = _discover_v2(root, "imagesTs", ending=ending, n_channels=len(modalities), labels=None)
    return DatasetInfo(name=root.name, root=root, modalities=modalities, labels=labels,
                       training=_sorted_unique(training, "imagesTr", json_path),
                       test=_sorted_unique(test, "imagesTs", json_path))
