"""``nnunet-ray evaluate``: score a folder of predicted label maps against reference labels.

    nnunet-ray evaluate --preds PRED_DIR --labels LABELS_DIR [--nsd-tolerance 1.0] [--allow-missing]

Every ``<case>.nii.gz`` (or ``.nii``) in ``--preds`` is paired with the file of the same name in ``--labels``.
Before any metric is computed, each pair's headers are checked: a missing label, or a prediction whose shape or
affine differs from its label's, is a one-line error naming the case. Labels without a prediction are an error too
(a half-finished prediction folder must not score as a whole one), listing them; ``--allow-missing`` scores the
cases that have one and records how many had none. Spacing comes from the label's header.
Writes ``summary.json`` and ``summary.csv`` (per case and class, then per-class and overall means).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np

from nnunet_ray.data import storage
from nnunet_ray.data.atomic import save_json, save_text
from nnunet_ray.data.inputs import strip_nifti_suffix
from nnunet_ray.data.local_views import local_copy, writable_folder
from nnunet_ray.data.nifti import AFFINE_ATOL, read_label
from nnunet_ray.data.records import RecordError, read_record
from nnunet_ray.data.types import CaseError, CaseFiles, DatasetError
from nnunet_ray.evaluation.surface import ABSENT_FROM_BOTH, case_metrics

log = logging.getLogger(__name__)
METRICS = ("dice", "hd95", "nsd")
PREDICT_RECORD = "predict.json"  # written by `nnunet-ray predict`; names the classes
SHOWN = 5  # case ids an error or a summary line lists before "..."


@dataclass(frozen=True)
class Pairs:
    """The cases to score: ``pairs`` (case_id, prediction, label), and ``missing``: ids of labels without a
    prediction (scored only with ``allow_missing``)."""

    pairs: list[tuple[str, Path, Path]]
    missing: list[str]


def _nifti_files(folder: Path) -> dict[str, Path]:
    """Case id -> file of every ``<case>.nii.gz`` / ``<case>.nii`` in ``folder`` (hidden files skipped)."""
    files = {}
    for path in sorted(folder.iterdir()):
        case_id = strip_nifti_suffix(path.name)
        if case_id is not None and not path.name.startswith(".") and case_id not in files:
            files[case_id] = path
    return files


def pair_cases(preds: str | Path, labels: str | Path, *, cases: Sequence[str] | None = None) -> Pairs:
    """Pair every prediction with its label, after checking shapes and affines from the headers.

    Args:
        preds: local folder of predicted label maps.
        labels: local folder of reference label maps.
        cases: score only these case ids (default: every label in ``labels``).

    Raises:
        DatasetError: a folder is missing or ``preds`` holds no prediction.
        CaseError: a case has no label file, a file is unreadable, or a prediction's shape or affine differs from
            its label's.
    """
    preds, labels = Path(preds), Path(labels)
    for folder, flag in ((preds, "--preds"), (labels, "--labels")):
        if not folder.is_dir():
            raise DatasetError(f"{flag}: {folder} is not a folder")
    predicted, reference = _nifti_files(preds), _nifti_files(labels)
    wanted = sorted(reference) if cases is None else sorted(cases)
    pairs = []
    for case_id, path in predicted.items():
        if cases is not None and case_id not in wanted:
            continue
        if case_id not in reference:
            raise CaseError(case_id, f"no label file {case_id}.nii.gz in {labels}")
        _check_geometry(case_id, path, reference[case_id])
        pairs.append((case_id, path, reference[case_id]))
    if not pairs:
        raise DatasetError(f"--preds: {preds} holds no predictions (<case>.nii.gz)")
    return Pairs(pairs, [case_id for case_id in wanted if case_id not in predicted])


def _header(case_id: str, path: Path, what: str) -> nib.Nifti1Image:
    """The image of ``path`` with only its header read (``what``: "prediction" or "label", for the error)."""
    try:
        return cast(nib.Nifti1Image, nib.load(str(path)))  # typed as any image; a .nii file loads as NIfTI-1 or -2
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for a damaged file; one line names it
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CaseError(case_id, f"cannot read {what} {path.name} (corrupt or truncated?): "
                                 f"{type(exc).__name__}: {problem}") from exc


def _check_geometry(case_id: str, pred: Path, label: Path) -> None:
    p, g = _header(case_id, pred, "prediction"), _header(case_id, label, "label")
    if p.shape[:3] != g.shape[:3]:
        raise CaseError(case_id, f"prediction shape {p.shape[:3]} != label shape {g.shape[:3]} (x, y, z)")
    if not np.allclose(p.affine, g.affine, atol=AFFINE_ATOL):
        diff = float(np.abs(p.affine - g.affine).max())
        raise CaseError(case_id, f"prediction affine differs from the label's (max difference {diff:.4g})")


def recorded_class_names(preds: str | Path) -> dict[int, str] | None:
    """Foreground class index -> name from ``predict.json`` when the predictions came from ``nnunet-ray predict``;
    None otherwise (the classes then run to the highest value in any label or prediction, found while scoring:
    another tool's prediction of a class no reference holds scores as a false positive, not an error)."""
    record = Path(preds) / PREDICT_RECORD
    if not record.is_file():
        return None
    try:
        labels = read_record(record)[0].get("labels") or {}
        names = {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0])) if int(k) > 0}
    except (RecordError, AttributeError, TypeError, ValueError) as err:
        log.warning("%s: not a predict record (%s); classes taken from the label maps", record, err)
        return None
    return names or None


def _read(case_id: str, path: Path, what: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    volume = read_label(CaseFiles(case_id, (), label=path), what=what)
    return volume.array[0], volume.spacing


def evaluate_folders(preds: str | Path, labels: str | Path, *, tolerance: float = 1.0, out: str | Path = "",
                     cases: Sequence[str] | None = None, allow_missing: bool = False,
                     progress: Callable[[str], None] = log.info) -> dict:
    """Score every prediction; write ``summary.json`` and ``summary.csv`` to ``out`` (default: ``preds``).

    Args:
        preds: folder of predicted label maps (a path or a URI: its label maps and predict.json are downloaded
            to a temporary folder first).
        labels: folder of reference label maps with the same file names (a path or a URI).
        tolerance: NSD tolerance in mm.
        out: where the summaries go (a path or a URI).
        cases: score only these case ids (default: every label in ``labels``).
        allow_missing: score the cases that have a prediction when some labels have none (else an error).
        progress: called with one line per case.

    Returns:
        The summary: ``classes``, ``nsd_tolerance_mm``, ``cases`` (per case and class), ``per_class`` means,
        ``mean`` (over classes), ``n_cases``, ``n_missing`` and ``missing`` (labels without a prediction).

    Raises:
        DatasetError: see :func:`pair_cases`; labels without a prediction (unless ``allow_missing``).
        CaseError: see :func:`pair_cases`; a label or prediction holding values outside the classes.
    """
    for folder, flag in ((preds, "--preds"), (labels, "--labels")):
        if not storage.is_dir(folder):
            raise DatasetError(f"{flag}: {storage.display(folder)} is not a folder")
    with local_copy(preds, keep=lambda name: not name.endswith(".npz")) as local_preds, \
            local_copy(labels) as local_labels:
        found = pair_cases(local_preds, local_labels, cases=cases)
        if found.missing and not allow_missing:
            raise DatasetError(f"--preds: {len(found.missing)} label(s) in {storage.display(labels)} have no "
                               f"prediction in {storage.display(preds)}: {_first(found.missing)} (--allow-missing "
                               f"scores the {len(found.pairs)} that have one)")
        with writable_folder(out or preds) as out_dir:
            return _score_folders(local_preds, found, tolerance=tolerance, out_dir=out_dir, progress=progress)


def _first(case_ids: Sequence[str]) -> str:
    """The first few ids, comma-separated, "..." when there are more."""
    return ", ".join(case_ids[:SHOWN]) + (", ..." if len(case_ids) > SHOWN else "")


def _score_folders(preds: Path, found: Pairs, *, tolerance: float, out_dir: Path,
                   progress: Callable[[str], None]) -> dict:
    """``evaluate_folders`` on a local predictions folder and its checked pairs; each file is read once."""
    pairs, recorded = found.pairs, recorded_class_names(preds)
    scored: list[tuple[str, list[dict[str, float]]]] = []
    for index, (case_id, pred_path, label_path) in enumerate(pairs, start=1):
        label, spacing = _read(case_id, label_path, "label")
        pred, _ = _read(case_id, pred_path, "prediction")
        n_classes = max(recorded) + 1 if recorded else max(int(label.max()), int(pred.max()), 1) + 1
        try:
            per_class = case_metrics(pred, label, spacing, n_classes, tolerance=tolerance)
        except ValueError as exc:
            raise CaseError(case_id, str(exc)) from exc
        scored.append((case_id, per_class))
        progress(f"  [{index}/{len(pairs)}] {case_id}: Dice " + ", ".join(
            f"{(recorded or {}).get(c, c)} {m['dice']:.3f}" for c, m in enumerate(per_class, start=1)))
    # Without predict.json a case scored only its own classes: the others are absent from both of its maps.
    names = recorded or {c: str(c) for c in range(1, max(len(per_class) for _, per_class in scored) + 1)}
    cases: list[dict[str, Any]] = [
        {"case_id": case_id, "metrics": {name: per_class[c - 1] if c <= len(per_class) else dict(ABSENT_FROM_BOTH)
                                         for c, name in names.items()}} for case_id, per_class in scored]
    class_means = {name: {k: float(np.mean([c["metrics"][name][k] for c in cases])) for k in METRICS}
                   for name in names.values()}
    summary = {"n_cases": len(cases), "classes": {str(k): v for k, v in names.items()}, "nsd_tolerance_mm": tolerance,
               "mean": {k: float(np.mean([m[k] for m in class_means.values()])) for k in METRICS},
               "per_class": class_means, "cases": cases, "n_missing": len(found.missing), "missing": found.missing}
    save_json(out_dir / "summary.json", summary)
    save_text(out_dir / "summary.csv", summary_csv(summary))
    return summary


def summary_csv(summary: dict) -> str:
    """Rows ``case_id, class, dice, hd95_mm, nsd``: every case and class, then ``mean`` per class and overall."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "class", "dice", "hd95_mm", "nsd"])
    for case in summary["cases"]:
        for name, m in case["metrics"].items():
            writer.writerow([case["case_id"], name, *(f"{m[k]:.6g}" for k in METRICS)])
    for name, m in summary["per_class"].items():
        writer.writerow(["mean", name, *(f"{m[k]:.6g}" for k in METRICS)])
    writer.writerow(["mean", "all", *(f"{summary['mean'][k]:.6g}" for k in METRICS)])
    return buffer.getvalue()


def summary_table(summary: dict) -> str:
    """The printed table: one row per class and the mean over classes."""
    header = f"{'class':<16}{'Dice':>8}{'HD95 mm':>10}{'NSD@' + format(summary['nsd_tolerance_mm'], 'g') + 'mm':>12}"
    rows = [header, "-" * len(header)]
    for name, m in [*summary["per_class"].items(), ("mean", summary["mean"])]:
        rows.append(f"{name:<16}{m['dice']:>8.4f}{m['hd95']:>10.2f}{m['nsd']:>12.4f}")
    missing = summary.get("n_missing", 0)
    note = f"; {missing} label(s) without a prediction not scored: {_first(summary['missing'])}" if missing else ""
    return "\n".join(rows) + f"\n({summary['n_cases']} cases{note})"
