"""NIfTI reading and writing with geometry, and the per-case checks every stage relies on.

NIfTI voxel data is ``(x, y, z[, c])``; inside the code arrays are ``(C, Z, Y, X)`` and spacings ``(z, y, x)``
mm (the header zooms reversed). The original affine is kept on the :class:`Volume` so predictions can be
written back onto the exact input grid with :func:`write_nifti`. Like the reference, no reorientation is done.

Every problem with a case's files becomes ``CaseError(case_id, problem)`` with a one-line ``problem``, so a
caller mapping over cases can record the failure and go on with the others.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.nifti1 import Nifti1Header, Nifti1Image
from nibabel.nifti2 import Nifti2Image
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from nnunet_ray.data.atomic import atomic_path
from nnunet_ray.data.types import CaseError, CaseFiles, Volume

# What reading raises for unreadable files: bad magic (ImageFileError), damaged or short headers
# (HeaderDataError, WrapStructError, ValueError), truncated data (OSError "Expected N bytes", EOFError from
# gzip), corrupt deflate streams (zlib.error), failed CRC checks and non-gzip data (gzip.BadGzipFile, an OSError).
_READ_ERRORS = (ImageFileError, HeaderDataError, WrapStructError, OSError, EOFError, ValueError, zlib.error)

# Image and label affines of real datasets differ by float noise; 1e-3 mm is far below a voxel.
AFFINE_ATOL = 1e-3


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _open(path: Path) -> Nifti1Image:
    """Load a NIfTI file; a gzipped one is decompressed in full first, so its CRC is verified.

    nibabel alone reads only the bytes the array needs and never reaches the gzip trailer, so damage inside an
    uncompressed deflate block (common for noisy float images) would pass silently as wrong voxel values.
    """
    if not path.name.endswith(".gz"):
        return cast(Nifti1Image, nib.load(str(path)))  # typed as any image; a .nii file loads as NIfTI-1 or -2
    with gzip.open(path, "rb") as stream:
        raw = stream.read()
    sizeof_hdr = {int.from_bytes(raw[:4], order) for order in ("little", "big")}  # 348: NIfTI-1, 540: NIfTI-2
    return Nifti2Image.from_bytes(raw) if 540 in sizeof_hdr else Nifti1Image.from_bytes(raw)


def _load(path: Path, case_id: str, what: str, *,
          as_label: bool) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read one file -> (data in NIfTI axis order, affine (4, 4), zooms). Images come back float32."""
    if path.exists() and not path.is_file():
        raise CaseError(case_id, f"{what} path is unreadable (a directory or special file, not a NIfTI file): {path}")
    if not path.is_file():
        raise CaseError(case_id, f"{what} file missing: {path}")
    if path.stat().st_size == 0:
        raise CaseError(case_id, f"{what} file is empty (0 bytes): {path}")
    try:
        img = _open(path)
        # Labels keep their stored dtype (no float copy of a large integer map); images are scaled to float32.
        data = np.asanyarray(img.dataobj) if as_label else img.get_fdata(dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except _READ_ERRORS as exc:
        raise CaseError(case_id, f"cannot read {what} {path.name} (corrupt or truncated?): {_one_line(exc)}") from exc
    if data.size == 0:
        raise CaseError(case_id, f"{what} {path.name} has no voxels (shape {data.shape})")
    return data, affine, zooms


def _to_czyx(data: np.ndarray, case_id: str, what: str) -> np.ndarray:
    """(x, y, z) -> (1, z, y, x); (x, y, z, c) -> (c, z, y, x); a singleton time axis (x, y, z, 1, c) is dropped."""
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim == 3:
        return np.ascontiguousarray(data.transpose(2, 1, 0)[None])
    if data.ndim == 4:
        return np.ascontiguousarray(data.transpose(3, 2, 1, 0))
    raise CaseError(case_id, f"{what} has shape {data.shape}; expected 3D (x, y, z) or 4D (x, y, z, c)")


def _spacing(zooms: tuple[float, ...], case_id: str, what: str) -> tuple[float, float, float]:
    if len(zooms) < 3:
        raise CaseError(case_id, f"{what} header has {len(zooms)} voxel sizes; expected 3")
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise CaseError(case_id, f"{what} voxel spacing {spacing} (z, y, x) must be positive")
    return spacing


def read_image(case: CaseFiles) -> Volume:
    """Read a case's image: one 3D/4D file, or one 3D file per channel (stacked in the listed order).

    Args:
        case: the case's files; ``case.images`` holds one path (3D or 4D NIfTI) or one path per channel.

    Returns:
        Volume with array ``(C, Z, Y, X)`` float32, spacing ``(z, y, x)`` mm and the first file's affine.

    Raises:
        CaseError: a file is missing or unreadable, channel files disagree in shape or affine, or the image
            holds NaN/Inf voxels.
    """
    if not case.images:
        raise CaseError(case.case_id, "no image files listed")
    channels, affine, spacing = [], None, None
    for path in case.images:
        data, file_affine, zooms = _load(path, case.case_id, "image", as_label=False)
        array = _to_czyx(data, case.case_id, "image")
        if affine is None:
            affine, spacing = file_affine, _spacing(zooms, case.case_id, "image")
        elif array.shape[1:] != channels[0].shape[1:]:
            raise CaseError(case.case_id, f"channel file {path.name} has shape (Z, Y, X) {array.shape[1:]} but "
                                          f"{case.images[0].name} has {channels[0].shape[1:]}")
        elif not np.allclose(file_affine, affine, atol=AFFINE_ATOL):
            raise CaseError(case.case_id, f"channel file {path.name} has a different affine than "
                                          f"{case.images[0].name}")
        channels.append(array)
    image = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise CaseError(case.case_id, f"image has {bad} NaN/Inf voxels")
    return Volume(image.astype(np.float32, copy=False), spacing, affine)  # type: ignore[arg-type]


def _as_classes(data: np.ndarray, case_id: str, what: str = "label") -> np.ndarray:
    """Integer-valued label data -> uint8, rejecting fractional, negative or > 255 values."""
    if data.dtype.kind not in "biu":
        finite = np.isfinite(data)
        if not finite.all():
            raise CaseError(case_id, f"{what} has {int(data.size - finite.sum())} NaN/Inf voxels")
        rounded = np.rint(data)
        off = np.abs(data - rounded) > 1e-3
        if off.any():
            raise CaseError(case_id, f"{what} has non-integer values, e.g. {float(data[off].flat[0]):g}")
        data = rounded
    low, high = data.min(), data.max()
    if low < 0 or high > 255:
        raise CaseError(case_id, f"{what} values must be class indices 0..255; found {low:g}..{high:g}")
    return data.astype(np.uint8)


def read_label(case: CaseFiles, *, what: str = "label") -> Volume:
    """Read a case's label map.

    Args:
        case: the case's files; ``case.label`` must be set.
        what: what errors call the file (``"prediction"`` when scoring a predicted label map).

    Returns:
        Volume with array ``(1, Z, Y, X)`` uint8, spacing ``(z, y, x)`` mm, the label file's affine.

    Raises:
        CaseError: no label listed, the file is missing/unreadable/not 3D, or its values are not class indices.
            Whether the classes exist in the dataset is checked by :func:`check_label_classes`.
    """
    if case.label is None:
        raise CaseError(case.case_id, "no label file listed")
    data, affine, zooms = _load(case.label, case.case_id, what, as_label=True)
    array = _to_czyx(data, case.case_id, what)
    if array.shape[0] != 1:
        raise CaseError(case.case_id, f"{what} has {array.shape[0]} channels; expected one 3D label map")
    return Volume(_as_classes(array, case.case_id, what), _spacing(zooms, case.case_id, what), affine)


def read_case(case: CaseFiles) -> tuple[Volume, Volume | None]:
    """Read image and (when listed) label, checking that they describe the same voxel grid.

    Args:
        case: the case's files; a test case has ``label=None``.

    Returns:
        (image, label): image ``(C, Z, Y, X)`` float32; label ``(1, Z, Y, X)`` uint8 or None.

    Raises:
        CaseError: anything :func:`read_image` / :func:`read_label` raise, a label shape different from the
            image's, or a label affine differing from the image's by more than ``AFFINE_ATOL``.
    """
    image = read_image(case)
    if case.label is None:
        return image, None
    label = read_label(case)
    if label.shape != image.shape:
        raise CaseError(case.case_id, f"label shape (Z, Y, X) {label.shape} != image shape {image.shape}")
    if not np.allclose(label.affine, image.affine, atol=AFFINE_ATOL):
        diff = float(np.abs(label.affine - image.affine).max())
        raise CaseError(case.case_id, f"label affine differs from image affine (max difference {diff:.4g})")
    return image, label


def check_label_classes(label: np.ndarray, n_classes: int, case_id: str) -> None:
    """Raise unless every value of ``label`` is a class of the dataset.

    Args:
        label: uint8 label map of any shape.
        n_classes: number of classes in dataset.json, background included.
        case_id: named in the error.

    Raises:
        CaseError: the label holds classes >= ``n_classes``.
    """
    present = np.flatnonzero(np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=n_classes))
    extra = present[present >= n_classes]
    if extra.size:
        raise CaseError(case_id, f"label has classes {extra.tolist()} but dataset.json defines "
                                 f"{n_classes} classes (0..{n_classes - 1})")


def _nifti_suffix(path: Path) -> str:
    for suffix in (".nii.gz", ".nii"):
        if path.name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: NIfTI file names must end in .nii.gz or .nii")


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, *, dtype: np.dtype | type = np.uint8,
                header: Any = None) -> None:
    """Write ``(Z, Y, X)`` (or ``(C, Z, Y, X)``, as a 4D file) back in NIfTI ``(x, y, z[, c])`` order, atomically.

    The file appears complete or not at all: it is written under a temporary name in the same folder, then
    renamed over ``path``. The voxel sizes in the header are those of ``affine``.

    Args:
        array: ``(Z, Y, X)`` or ``(C, Z, Y, X)``.
        affine: the 4x4 voxel (x, y, z) -> world mm matrix, usually ``Volume.affine`` of the input image.
        path: target ``.nii.gz`` (compressed) or ``.nii`` file; its folder is created if missing.
        dtype: stored data type (uint8 for label maps, float32 for images).
        header: the input image's NIfTI header (:func:`read_header`); when given, the written file keeps its
            qform/sform codes, units and pixdim (the data shape, type and scaling are the new array's).

    Raises:
        ValueError: wrong array rank, affine shape or file suffix.
    """
    path = Path(path)
    _nifti_suffix(path)  # refuses names that are not .nii / .nii.gz
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"write_nifti: expected (Z, Y, X) or (C, Z, Y, X), got shape {array.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"write_nifti: affine must be 4x4, got {affine.shape}")
    # Reversing the axes gives a Fortran-ordered view, which is exactly NIfTI's on-disk order: no copy.
    data = array.transpose(tuple(range(array.ndim))[::-1]).astype(dtype, copy=False)
    if header is None:
        img = Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm")
    else:
        source = Nifti1Header.from_header(header)
        # The geometry goes into the header with the input's codes; passing the affine to the image instead lets
        # nibabel replace the codes (sform "aligned", qform "unknown") whenever the header's best affine differs.
        source.set_qform(affine, code=int(source["qform_code"]))
        source.set_sform(affine, code=int(source["sform_code"]))
        img = Nifti1Image(data, None, header=source)
        img.header.set_data_dtype(dtype)
        img.header.set_slope_inter(1.0, 0.0)  # class indices are stored as they are, whatever the input's scaling
    with atomic_path(path) as tmp:  # the temporary name ends with the real one: nibabel sees the suffix
        nib.save(img, tmp)


def read_header(path: str | Path) -> Any:
    """The NIfTI header of ``path`` (reads the header only), to write a prediction with the input's geometry.

    Raises:
        OSError, nibabel's ImageFileError: the file is missing or unreadable (read the image first: reading
            reports that as a one-line ``CaseError``).
    """
    return nib.load(str(path)).header
