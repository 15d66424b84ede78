"""NIfTI I/O: axis order and spacing by hand, atomic writing, and one test per CaseError kind."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.data.nifti import check_label_classes, read_case, read_image, read_label, write_nifti
from nnunet_ray.data.types import CaseError, CaseFiles

# Voxel sizes x 0.5, y 0.7, z 3.0 mm, plus an origin; the code must report spacing (z, y, x) = (3.0, 0.7, 0.5).
AFFINE = np.array([[0.5, 0, 0, -10.0], [0, 0.7, 0, 20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])


def _coded(shape_xyz: tuple[int, ...]) -> np.ndarray:
    """data[x, y, z(, c)] = 1000 c + 100 z + 10 y + x: each voxel's value spells its own NIfTI index."""
    index = np.indices(shape_xyz)
    weights = (1, 10, 100, 1000)[: len(shape_xyz)]
    return sum(w * i for w, i in zip(weights, index)).astype(np.float32)


def _save(data: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _case(tmp_path: Path, image: np.ndarray, label: np.ndarray | None = None, *,
          label_affine: np.ndarray = AFFINE) -> CaseFiles:
    img = _save(image, tmp_path / "img.nii.gz")
    lbl = None if label is None else _save(label, tmp_path / "lbl.nii.gz", label_affine)
    return CaseFiles("case_7", (img,), lbl)


def _label_xyz(shape_xyz: tuple[int, int, int] = (4, 3, 2)) -> np.ndarray:
    label = np.zeros(shape_xyz, dtype=np.uint8)
    label[1, 2, 1] = 2
    return label


# --- axes and geometry, checked by hand -------------------------------------------------------------------


def test_3d_axes_and_spacing(tmp_path: Path) -> None:
    vol = read_image(_case(tmp_path, _coded((4, 3, 2))))
    assert vol.array.shape == (1, 2, 3, 4) and vol.array.dtype == np.float32 and vol.shape == (2, 3, 4)
    assert vol.array[0, 1, 2, 3] == 100 * 1 + 10 * 2 + 3  # (c, z, y, x) = (0, 1, 2, 3)
    assert vol.array[0, 0, 1, 2] == 12
    assert vol.spacing == pytest.approx((3.0, 0.7, 0.5))
    np.testing.assert_allclose(vol.affine, AFFINE)


def test_4d_multimodal_axes(tmp_path: Path) -> None:
    vol = read_image(_case(tmp_path, _coded((4, 3, 2, 2))))  # (x, y, z, c)
    assert vol.array.shape == (2, 2, 3, 4)
    assert vol.array[1, 1, 2, 3] == 1000 + 100 + 20 + 3
    assert vol.array[0, 1, 0, 2] == 102
    assert vol.spacing == pytest.approx((3.0, 0.7, 0.5))


def test_singleton_time_axis_dropped(tmp_path: Path) -> None:
    data = _coded((4, 3, 2, 2))[:, :, :, None, :]  # (x, y, z, t=1, c): how some tools store vectors
    assert read_image(_case(tmp_path, data)).array[1, 1, 2, 3] == 1123


def test_per_channel_files_stacked(tmp_path: Path) -> None:
    base = _coded((4, 3, 2))
    paths = (_save(base, tmp_path / "a_0000.nii.gz"), _save(base + 1000, tmp_path / "a_0001.nii.gz"))
    vol = read_image(CaseFiles("a", paths))
    assert vol.array.shape == (2, 2, 3, 4) and vol.array[1, 1, 2, 3] == 1123


def test_label_uint8_and_float_stored_label(tmp_path: Path) -> None:
    case = _case(tmp_path, _coded((4, 3, 2)), _label_xyz().astype(np.float32))
    image, label = read_case(case)
    assert label is not None and label.array.dtype == np.uint8 and label.array.shape == (1, 2, 3, 4)
    assert label.array[0, 1, 2, 1] == 2 and label.array.sum() == 2
    assert image.shape == label.shape


def test_read_case_without_label(tmp_path: Path) -> None:
    image, label = read_case(_case(tmp_path, _coded((4, 3, 2))))
    assert label is None and image.shape == (2, 3, 4)


def test_tiny_affine_difference_tolerated(tmp_path: Path) -> None:
    case = _case(tmp_path, _coded((4, 3, 2)), _label_xyz(), label_affine=AFFINE + 1e-5)
    assert read_case(case)[1] is not None


# --- writing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii"])
def test_write_nifti_round_trip(tmp_path: Path, name: str) -> None:
    zyx = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "sub" / name
    write_nifti(zyx, AFFINE, path)
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    assert data.shape == (4, 3, 2) and data.dtype == np.uint8
    assert data[3, 2, 1] == zyx[1, 2, 3]
    np.testing.assert_allclose(img.affine, AFFINE)
    assert img.header.get_zooms() == pytest.approx((0.5, 0.7, 3.0))
    assert sorted(p.name for p in path.parent.iterdir()) == [name]  # no temporary file left behind
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_label(CaseFiles("c", (path,), path))
    np.testing.assert_array_equal(back.array[0], zyx)


def test_write_nifti_4d_float(tmp_path: Path) -> None:
    czyx = np.random.default_rng(0).random((2, 2, 3, 4), dtype=np.float32)
    write_nifti(czyx, AFFINE, tmp_path / "x.nii.gz", dtype=np.float32)
    assert nib.load(str(tmp_path / "x.nii.gz")).shape == (4, 3, 2, 2)
    vol = read_image(CaseFiles("x", (tmp_path / "x.nii.gz",)))
    np.testing.assert_array_equal(vol.array, czyx)
    assert vol.spacing == pytest.approx((3.0, 0.7, 0.5))


def test_write_nifti_replaces_existing(tmp_path: Path) -> None:
    path = tmp_path / "p.nii.gz"
    write_nifti(np.zeros((2, 2, 2)), AFFINE, path)
    write_nifti(np.ones((2, 2, 2)), AFFINE, path)
    assert np.asanyarray(nib.load(str(path)).dataobj).sum() == 8


@pytest.mark.parametrize("array, affine, name, match", [
    (np.zeros((2, 2)), AFFINE, "a.nii.gz", "expected"),
    (np.zeros((2, 2, 2)), np.eye(3), "a.nii.gz", "4x4"),
    (np.zeros((2, 2, 2)), AFFINE, "a.npy", ".nii.gz or .nii"),
])
def test_write_nifti_rejects(tmp_path: Path, array: np.ndarray, affine: np.ndarray, name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_nifti(array, affine, tmp_path / name)


# --- every CaseError kind ---------------------------------------------------------------------------------


def _raises(case: CaseFiles, match: str, reader=read_case) -> CaseError:
    with pytest.raises(CaseError, match=match) as err:
        reader(case)
    assert err.value.case_id == case.case_id and str(err.value).startswith(f"{case.case_id}: ")
    assert "\n" not in str(err.value)
    return err.value


def test_image_missing(tmp_path: Path) -> None:
    _raises(CaseFiles("c1", (tmp_path / "nope.nii.gz",)), "image file missing: .*nope.nii.gz")


def test_label_missing(tmp_path: Path) -> None:
    case = _case(tmp_path, _coded((4, 3, 2)))
    _raises(CaseFiles(case.case_id, case.images, tmp_path / "gone.nii.gz"), "label file missing")


def test_no_label_listed(tmp_path: Path) -> None:
    _raises(_case(tmp_path, _coded((4, 3, 2))), "no label file listed", read_label)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.nii.gz").touch()
    _raises(CaseFiles("c", (tmp_path / "e.nii.gz",)), r"image file is empty \(0 bytes\)")


def test_not_a_gzip_file(tmp_path: Path) -> None:
    (tmp_path / "bad.nii.gz").write_bytes(b"this is not a NIfTI file" * 20)
    _raises(CaseFiles("c", (tmp_path / "bad.nii.gz",)), r"cannot read image bad.nii.gz \(corrupt or truncated\?\)")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.9999])  # 0.9999: only the gzip trailer is cut
def test_truncated_gzip(tmp_path: Path, keep: float) -> None:
    path = _save(np.random.default_rng(1).random((20, 20, 10), dtype=np.float32), tmp_path / "t.nii.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    _raises(CaseFiles("c", (path,)), "cannot read image t.nii.gz")


def test_truncated_uncompressed(tmp_path: Path) -> None:
    path = _save(_coded((20, 20, 10)), tmp_path / "t.nii")
    path.write_bytes(path.read_bytes()[:1000])
    _raises(CaseFiles("c", (path,)), "cannot read image t.nii .*Expected")


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    path = _save(np.random.default_rng(2).random((20, 20, 10), dtype=np.float32), tmp_path / "t.nii.gz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)  # damage the deflate stream mid-file
    path.write_bytes(bytes(raw))
    _raises(CaseFiles("c", (path,)), "cannot read image t.nii.gz .*CRC check failed")


def test_corrupt_label(tmp_path: Path) -> None:
    case = _case(tmp_path, _coded((4, 3, 2)))
    bad = tmp_path / "l.nii.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 40))
    _raises(CaseFiles(case.case_id, case.images, bad), "cannot read label l.nii.gz")


def test_label_shape_mismatch(tmp_path: Path) -> None:
    case = _case(tmp_path, _coded((4, 3, 2)), _label_xyz((4, 3, 3)))
    _raises(case, r"label shape \(Z, Y, X\) \(3, 3, 4\) != image shape \(2, 3, 4\)")


def test_label_affine_mismatch(tmp_path: Path) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    _raises(_case(tmp_path, _coded((4, 3, 2)), _label_xyz(), label_affine=shifted),
            r"label affine differs from image affine \(max difference 0.5\)")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_image(tmp_path: Path, value: float) -> None:
    data = _coded((4, 3, 2))
    data[0, 0, 0] = data[1, 1, 1] = value
    _raises(_case(tmp_path, data), "image has 2 NaN/Inf voxels")


@pytest.mark.parametrize("values, match", [
    ((0.0, 1.5), "non-integer values, e.g. 1.5"),
    ((0, -1), r"class indices 0..255; found -1..0"),
    ((0, 300), r"class indices 0..255; found 0..300"),
    ((0.0, np.nan), "label has 1 NaN/Inf voxels"),
])
def test_label_values_not_classes(tmp_path: Path, values: tuple, match: str) -> None:
    dtype = np.float32 if isinstance(values[0], float) else np.int16
    label = np.full((4, 3, 2), values[0], dtype=dtype)
    label[0, 0, 0] = values[1]
    _raises(_case(tmp_path, _coded((4, 3, 2)), label), match)


def test_label_with_channels(tmp_path: Path) -> None:
    _raises(_case(tmp_path, _coded((4, 3, 2)), np.zeros((4, 3, 2, 2), np.uint8)), "label has 2 channels")


def test_image_wrong_rank(tmp_path: Path) -> None:
    _raises(_case(tmp_path, np.zeros((4, 3), np.float32)), r"image has shape \(4, 3\); expected 3D")


def test_channel_files_disagree(tmp_path: Path) -> None:
    a = _save(_coded((4, 3, 2)), tmp_path / "a_0000.nii.gz")
    b = _save(_coded((4, 3, 3)), tmp_path / "a_0001.nii.gz")
    _raises(CaseFiles("a", (a, b)), r"channel file a_0001.nii.gz has shape \(Z, Y, X\) \(3, 3, 4\)")
    c = _save(_coded((4, 3, 2)), tmp_path / "a_0002.nii.gz", AFFINE * 2)
    _raises(CaseFiles("a", (a, c)), "channel file a_0002.nii.gz has a different affine")


def test_check_label_classes() -> None:
    label = np.array([[0, 1], [3, 5]], dtype=np.uint8)
    check_label_classes(label, 6, "ok")
    with pytest.raises(CaseError, match=r"c9: label has classes \[3, 5\] but dataset.json defines 3 classes \(0..2\)"):
        check_label_classes(label, 3, "c9")
