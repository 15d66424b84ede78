"""``<case>.json``: what preprocessing recorded about one case, and the one reader and writer of that file.

Preprocessing writes it last, as the case's done-marker (``case.preprocess_case``); ``done_state`` and
``stale_cases`` below read it to skip finished work, the loaders read the case's shape and foreground samples, and
``inverse.py`` puts predictions back on the original image from its geometry. ``preprocess_for_prediction`` returns
the same properties in memory, without the file's bookkeeping (hash, mode, raw files).

The file is flat JSON, as earlier versions wrote it; one from before the ``version`` key reads as version 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunet_ray.data import storage
from nnunet_ray.data.records import RecordError, check_record, read_record
from nnunet_ray.data.types import CaseFiles
from nnunet_ray.preprocessing.raw_files import CHANGED, check_raw_files
from nnunet_ray.preprocessing.resample import anisotropic_axis

CASE_RECORD_VERSION = 1
# done_state's answers: the case is written and current / must be (re)written / is written but its raw files changed.
UP_TO_DATE, NOT_DONE, RAW_CHANGED = "up_to_date", "not_done", "raw_changed"
Box = tuple[tuple[int, int], ...]


def record_name(case_id: str) -> str:
    """The file name of a case's record in its preprocessed folder."""
    return f"{case_id}.json"


@dataclass(frozen=True)
class CaseProperties:
    """One preprocessed case: where its voxels came from, what grid they are on, where its foreground is.

    Attributes:
        original_shape, original_spacing, affine: the input image's grid ``(Z, Y, X)``, mm, and its NIfTI affine.
        crop_box: ``((z0, z1), (y0, y1), (x0, x1))`` the nonzero box cropped from the original image.
        resampled_shape: the crop's shape after resampling, before padding.
        pad: ``((before, after),) * 3`` zero padding up to the patch size (training mode only).
        shape: the arrays' spatial shape as written.
        anisotropic_axis: the axis resampled separately (nnU-Net's anisotropic rule), or None; the inverse
            repeats it. A record from before it was stored gets it re-derived from the shapes.
        target_spacing: the spacing the crop was resampled to, mm.
        foreground: class (a string) -> up to 1000 ``[z, y, x]`` voxels of it, for foreground-oversampled crops.
        case_id, plans_hash, mode, raw_files: the file's bookkeeping: the plans' ``preprocessing_hash`` and the
            mode it was written for, and the raw files it was read from (``raw_files.py``); empty in memory.
    """

    original_shape: tuple[int, ...]
    original_spacing: tuple[float, ...]
    affine: tuple[tuple[float, ...], ...]
    crop_box: Box
    resampled_shape: tuple[int, ...]
    pad: Box
    shape: tuple[int, ...]
    anisotropic_axis: int | None = None
    target_spacing: tuple[float, ...] = ()
    foreground: dict[str, list[list[int]]] = field(default_factory=dict)
    case_id: str = ""
    plans_hash: str = ""
    mode: str = ""
    raw_files: Any = None
    version: int = CASE_RECORD_VERSION

    @classmethod
    def unprocessed(cls, case_id: str, shape: Sequence[int], foreground: dict[str, list[list[int]]] | None = None,
                    ) -> CaseProperties:
        """The record of arrays written as they are, on a 1 mm grid (no crop, resampling or padding): synthetic
        cases made straight on the preprocessed grid, such as the loader benchmark's."""
        shape = tuple(int(n) for n in shape)
        return cls(original_shape=shape, original_spacing=(1.0,) * 3, affine=tuple(
            tuple(float(i == j) for j in range(4)) for i in range(4)), crop_box=tuple((0, n) for n in shape),
            resampled_shape=shape, pad=((0, 0),) * 3, shape=shape, target_spacing=(1.0,) * 3,
            foreground=foreground or {}, case_id=case_id)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, as the file holds them

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> CaseProperties:
        """The record in ``data`` (a parsed ``<case>.json``); keys this version does not know are ignored.

        Raises:
            RecordError: naming ``source``: not an object, a newer version, a missing key or a malformed value.
        """
        values = check_record(data, current=CASE_RECORD_VERSION, source=source, what="case record")
        names = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in names.items() if n not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise RecordError(f"{source}: not a case record (missing {', '.join(missing)}); run preprocess again")
        try:
            return cls(**{**{k: v for k, v in values.items() if k in names}, **_grids(values)})
        except (TypeError, ValueError) as err:
            raise RecordError(f"{source}: not a case record ({err}); run preprocess again") from err


def _grids(values: dict[str, Any]) -> dict[str, Any]:
    """The geometry fields as the tuples the dataclass holds (JSON gives lists)."""
    grids = {"original_shape": tuple(int(n) for n in values["original_shape"]),
             "original_spacing": tuple(float(s) for s in values["original_spacing"]),
             "affine": tuple(tuple(float(v) for v in row) for row in values["affine"]),
             "crop_box": tuple((int(a), int(b)) for a, b in values["crop_box"]),
             "resampled_shape": tuple(int(n) for n in values["resampled_shape"]),
             "pad": tuple((int(a), int(b)) for a, b in values["pad"]),
             "shape": tuple(int(n) for n in values["shape"]),
             "target_spacing": tuple(float(s) for s in values.get("target_spacing", ()))}
    axis = values["anisotropic_axis"] if "anisotropic_axis" in values else _derived_axis(grids)
    return {**grids, "anisotropic_axis": None if axis is None else int(axis)}


def _derived_axis(grids: dict[str, Any]) -> int | None:
    """The coarse axis of a record written before it was stored: re-derived from the shapes, which is exact up to
    the rounding of the resampled shape and can disagree near the 3.0 anisotropy threshold."""
    spacing, box = grids["original_spacing"], grids["crop_box"]
    target = [s * (b - a) / r for s, (a, b), r in zip(spacing, box, grids["resampled_shape"])]
    return anisotropic_axis(spacing, target)


def read_case_record(folder: str | Path, case_id: str) -> CaseProperties:
    """``<folder>/<case_id>.json`` (a path or URI).

    Raises:
        FileNotFoundError: there is none.
        RecordError: it is not JSON or not a case record, naming the file.
    """
    data, source = read_record(storage.join(folder, record_name(case_id)), advice="; run preprocess again")
    return CaseProperties.from_json(data, source=source)


def write_case_record(folder: str | Path, props: CaseProperties) -> None:
    """Write ``<folder>/<case_id>.json`` atomically (a path or URI)."""
    storage.write_json(storage.join(folder, record_name(props.case_id)), props.to_json(), indent=None)


def done_state(out_dir: str | Path, case: CaseFiles, plans_hash: str, mode: str) -> str:
    """Whether ``case`` is done in ``out_dir``: the one definition of "this case needs no work".

    Done means ``<case>.json`` records this preprocessing hash and mode, its arrays exist, and its raw files are the
    ones recorded (``raw_files.check_raw_files``; a case written before that record existed counts as done). When
    only the files' times moved (a copy, a staged ``s3://`` root), the record is rewritten with the new times.

    Args:
        out_dir: the preprocessed folder, a path or a URI (``s3://``...; see ``nnunet_ray.data.storage``).
        case: the case's raw files as ``mode`` uses them (no label in ``"test"`` mode).

    Returns:
        ``UP_TO_DATE``, ``NOT_DONE`` (missing, half-written, other hash or mode) or ``RAW_CHANGED``.
    """
    try:
        props = read_case_record(out_dir, case.case_id)
    except (OSError, RecordError):
        return NOT_DONE
    suffixes = ("_x.npy",) if mode == "test" else ("_x.npy", "_y.npy")
    written = (props.plans_hash == plans_hash and props.mode == mode
               and all(storage.is_file(storage.join(out_dir, f"{case.case_id}{s}")) for s in suffixes))
    if not written:
        return NOT_DONE
    state, refreshed = check_raw_files(props.raw_files, case)
    if state == CHANGED:
        return RAW_CHANGED
    if refreshed is not None:
        with contextlib.suppress(OSError):  # a read-only root: the next rerun hashes the files again, that is all
            write_case_record(out_dir, dataclasses.replace(props, raw_files=refreshed))
    return UP_TO_DATE


def stale_cases(out_dir: str | Path, case_ids: Iterable[str], plans_hash: str) -> list[str]:
    """The cases of ``case_ids`` whose ``<case>.json`` is missing, unreadable or records another preprocessing hash.

    Args:
        out_dir: a preprocessed folder, a path or a URI.
        case_ids: the cases to check.
        plans_hash: the plans' ``preprocessing_hash``.

    Returns:
        the stale case ids, in the given order.
    """
    stale = []
    for case_id in case_ids:
        try:
            recorded = read_case_record(out_dir, case_id).plans_hash
        except (OSError, RecordError):
            recorded = None
        if recorded != plans_hash:
            stale.append(case_id)
    return stale
