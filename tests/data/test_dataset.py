"""dataset.json reading: MSD v1 and nnU-Net v2 layouts, case ids, sorting, and every rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.types import DatasetError

MSD_LABELS = {"0": "background", "1": "heart"}


def _msd(root: Path, training: list, *, test: list | None = None, **extra) -> Path:
    """Write an MSD v1 dataset.json into ``root`` (files are not created: load_dataset never opens them)."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {"name": "X", "modality": {"0": "MRI"}, "labels": MSD_LABELS, "training": training,
            "test": test or [], **extra}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _pair(case_id: str, suffix: str = ".nii.gz") -> dict[str, str]:
    return {"image": f"./imagesTr/{case_id}{suffix}", "label": f"./labelsTr/{case_id}{suffix}"}


def _v2(root: Path, cases: list[str], *, channels: int = 2, test: tuple[str, ...] = (), **extra) -> Path:
    """Write an nnU-Net v2 folder with empty files for ``cases`` (``channels`` files each) and ``test``."""
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        for c in range(channels):
            (root / "imagesTr" / f"{case}_{c:04d}.nii.gz").touch()
        (root / "labelsTr" / f"{case}.nii.gz").touch()
    for case in test:
        for c in range(channels):
            (root / "imagesTs" / f"{case}_{c:04d}.nii.gz").touch()
    meta = {"channel_names": {str(c): f"ch{c}" for c in range(channels)},
            "labels": {"background": 0, "PZ": 1, "TZ": 2}, "numTraining": len(cases), "file_ending": ".nii.gz",
            **extra}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# --- MSD v1 -----------------------------------------------------------------------------------------------


def test_msd_synth_task(synth_task: Path) -> None:
    info = load_dataset(synth_task)
    root = synth_task.resolve()
    assert info.name == "Task99_Synth" and info.root == root and info.task_number == 99
    assert info.modalities == ("MRI",) and not info.is_ct
    assert info.labels == {0: "background", 1: "organ", 2: "lesion", 3: "spot"} and info.n_classes == 4
    assert [c.case_id for c in info.training] == [f"synth_{i:03d}" for i in range(6)]
    assert [c.case_id for c in info.test] == ["synth_006", "synth_007"]
    first = info.training[0]
    assert first.images == (root / "imagesTr" / "synth_000.nii.gz",)
    assert first.label == root / "labelsTr" / "synth_000.nii.gz"
    assert all(c.label is None for c in info.test)


def test_msd_ct_modality(synth_task_ct: Path) -> None:
    assert load_dataset(synth_task_ct).is_ct


def test_msd_case_ids_sorted_and_suffixes(tmp_path: Path) -> None:
    root = _msd(tmp_path / "Task02_Heart", [_pair("la_010"), _pair("la_003", ".nii"), _pair("la_007")],
                test=["./imagesTs/la_001.nii.gz", {"image": "imagesTs/la_000.nii.gz"}])
    info = load_dataset(root)
    assert [c.case_id for c in info.training] == ["la_003", "la_007", "la_010"]
    assert info.training[0].images == (root.resolve() / "imagesTr" / "la_003.nii",)
    assert [c.case_id for c in info.test] == ["la_000", "la_001"]
    assert info.labels == {0: "background", 1: "heart"}


def test_msd_test_key_optional(tmp_path: Path) -> None:
    root = tmp_path / "T"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(
        {"modality": {"0": "CT"}, "labels": MSD_LABELS, "training": [_pair("a")]}))
    assert load_dataset(root).test == ()


def test_msd_multichannel_modalities_in_key_order(tmp_path: Path) -> None:
    root = _msd(tmp_path / "T", [_pair("a")], modality={"1": "T1w", "0": "FLAIR", "2": "T2w"})
    assert load_dataset(root).modalities == ("FLAIR", "T1w", "T2w")


def test_symlink_inside_folder_is_allowed(tmp_path: Path) -> None:
    root = _msd(tmp_path / "T", [_pair("a")])
    (root / "store").mkdir()
    (root / "imagesTr").symlink_to(root / "store")
    assert load_dataset(root).training[0].images == (root.resolve() / "store" / "a.nii.gz",)


# --- nnU-Net v2 -------------------------------------------------------------------------------------------


def test_v2_reading(tmp_path: Path) -> None:
    root = _v2(tmp_path / "Dataset005_Prostate", ["prostate_16", "prostate_00"], test=("prostate_03",))
    (root / "imagesTr" / "._prostate_00_0000.nii.gz").touch()  # macOS resource fork: not a case
    (root / "imagesTr" / "notes.txt").touch()
    info = load_dataset(root)
    root = root.resolve()
    assert info.name == "Dataset005_Prostate" and info.task_number is None
    assert info.modalities == ("ch0", "ch1")
    assert info.labels == {0: "background", 1: "PZ", 2: "TZ"}
    assert [c.case_id for c in info.training] == ["prostate_00", "prostate_16"]
    assert info.training[0].images == (root / "imagesTr" / "prostate_00_0000.nii.gz",
                                       root / "imagesTr" / "prostate_00_0001.nii.gz")
    assert info.training[0].label == root / "labelsTr" / "prostate_00.nii.gz"
    assert [(c.case_id, c.label) for c in info.test] == [("prostate_03", None)]
    assert info.test[0].images[1] == root / "imagesTs" / "prostate_03_0001.nii.gz"


def test_v2_without_imagests(tmp_path: Path) -> None:
    root = _v2(tmp_path / "D", ["a"], channels=1)
    (root / "imagesTs").rmdir()
    assert load_dataset(root).test == ()


@pytest.mark.parametrize("labels, match", [
    ({"background": 0, "whole tumor": [1, 2, 3]}, "region-based labels"),
    ({"background": 0, "organ": "1"}, "must map to an integer"),
    ({"background": 0, "a": 1, "b": 1}, "share the value 1"),
    ({"background": 0, "a": 2}, "without gaps"),
    ({"background": 0}, "at least one foreground"),
    ({"background": 0, "lesion": 1, "ignore": 2}, "the 'ignore' label \\(2\\) is not supported"),
])
def test_v2_bad_labels(tmp_path: Path, labels: dict, match: str) -> None:
    root = _v2(tmp_path / "D", ["a"], labels=labels)
    with pytest.raises(DatasetError, match=match):
        load_dataset(root)


def test_v2_num_training_mismatch(tmp_path: Path) -> None:
    root = _v2(tmp_path / "D", ["a", "b"], numTraining=3)
    with pytest.raises(DatasetError, match="numTraining is 3 but imagesTr holds 2"):
        load_dataset(root)


def test_v2_missing_imagestr(tmp_path: Path) -> None:
    root = tmp_path / "D"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}, "file_ending": ".nii.gz"}))
    with pytest.raises(DatasetError, match="imagesTr folder not found"):
        load_dataset(root)


def test_v2_no_cases(tmp_path: Path) -> None:
    root = _v2(tmp_path / "D", [], numTraining=0)
    with pytest.raises(DatasetError, match="no training images named <case>_0000.nii.gz"):
        load_dataset(root)


def test_v2_symlinked_file_escaping(tmp_path: Path) -> None:
    root = _v2(tmp_path / "D", ["a"], channels=1)
    outside = tmp_path / "elsewhere.nii.gz"
    outside.touch()
    (root / "imagesTr" / "a_0000.nii.gz").unlink()
    (root / "imagesTr" / "a_0000.nii.gz").symlink_to(outside)
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        load_dataset(root)


# --- rejections -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image, match", [
    ("../elsewhere/a.nii.gz", "outside the dataset folder"),
    ("./imagesTr/../../a.nii.gz", "outside the dataset folder"),
    ("/data/a.nii.gz", "absolute path"),
    ("", "expected a relative path string"),
    ("./imagesTr/a.mha", "not a NIfTI file name"),
])
def test_msd_bad_image_path(tmp_path: Path, image: str, match: str) -> None:
    root = _msd(tmp_path / "T", [_pair("ok"), {"image": image, "label": "./labelsTr/a.nii.gz"}])
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(root)
    assert "training[1]" in str(err.value)


def test_msd_label_path_escaping(tmp_path: Path) -> None:
    root = _msd(tmp_path / "T", [{"image": "./imagesTr/a.nii.gz", "label": "../a.nii.gz"}])
    with pytest.raises(DatasetError, match=r"training\[0\].*'../a.nii.gz'.*outside"):
        load_dataset(root)


def test_msd_test_path_escaping(tmp_path: Path) -> None:
    root = _msd(tmp_path / "T", [_pair("a")], test=["../../etc/passwd.nii.gz"])
    with pytest.raises(DatasetError, match=r"test\[0\].*outside"):
        load_dataset(root)


def test_msd_symlinked_folder_escaping(tmp_path: Path) -> None:
    root = _msd(tmp_path / "T", [_pair("a")])
    (tmp_path / "outside").mkdir()
    (root / "imagesTr").symlink_to(tmp_path / "outside")
    with pytest.raises(DatasetError, match=r"training\[0\].*outside the dataset folder"):
        load_dataset(root)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")


def test_missing_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset.json not found"):
        load_dataset(tmp_path)


def test_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text('{"modality": {"0": "CT"},,}')
    with pytest.raises(DatasetError, match=r"invalid JSON \(.* at line 1, column \d+\)"):
        load_dataset(tmp_path)


def test_json_not_an_object(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="expected a JSON object"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("drop", ["modality", "labels", "training"])
def test_msd_missing_key(tmp_path: Path, drop: str) -> None:
    meta = {"modality": {"0": "CT"}, "labels": MSD_LABELS, "training": [_pair("a")]}
    del meta[drop]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=f"missing key '{drop}'"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("change, match", [
    ({"labels": {"0": "background", "2": "x"}}, "without gaps"),
    ({"labels": {"zero": "background", "1": "x"}}, "keys must be integers"),
    ({"labels": {"0": "background"}}, "at least one foreground"),
    ({"modality": {}}, "'modality' must be numbered"),
    ({"training": {"a": 1}}, "'training' must be a JSON list"),
    ({"training": []}, "'training' is empty"),
    ({"training": [{"image": "./imagesTr/a.nii.gz"}]}, r"training\[0\]: expected"),
    ({"training": [_pair("a"), _pair("a")]}, "case id 'a' appears twice in training"),
])
def test_msd_malformed(tmp_path: Path, change: dict, match: str) -> None:
    meta = {"modality": {"0": "CT"}, "labels": MSD_LABELS, "training": [_pair("a")], **change}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=match):
        load_dataset(tmp_path)


def test_files_are_not_opened(tmp_path: Path) -> None:
    """A listed but missing file is the case's problem at read time, not the dataset's."""
    info = load_dataset(_msd(tmp_path / "T", [_pair("ghost")]))
    assert not info.training[0].images[0].exists()
