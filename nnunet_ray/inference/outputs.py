"""A prediction folder: ``<case>.nii.gz`` label maps in the input's geometry, optional ``<case>.npz`` probabilities.

The label map keeps the input image's header (qform/sform codes, units, pixdim) and affine and is stored as
uint8; ``--save-probabilities`` adds ``<case>.npz`` holding ``probabilities``, float16 ``(K, Z, Y, X)`` on the same
grid. Every file is written under a temporary name and renamed, the label map last, so a file is never seen
half-written. Which cases of a folder are done, and by which ensemble, is ``predict.json``'s to say
(``nnunet_ray.inference.record``): a case is always written here, replacing any file of the same name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_ray.data.atomic import atomic_path
from nnunet_ray.data.nifti import read_header, write_nifti
from nnunet_ray.data.types import CaseError, CaseFiles
from nnunet_ray.inference.postprocess import keep_largest_component

LABEL_SUFFIX = ".nii.gz"
PROBS_SUFFIX = ".npz"


def output_names(case_id: str, *, save_probabilities: bool) -> list[str]:
    """The file names of a finished case; the label map is last (the done-marker)."""
    label = f"{case_id}{LABEL_SUFFIX}"
    return [f"{case_id}{PROBS_SUFFIX}", label] if save_probabilities else [label]


def output_files(out_dir: str | Path, case_id: str, *, save_probabilities: bool) -> list[Path]:
    """The files a finished case has in ``out_dir`` (``output_names`` there)."""
    return [Path(out_dir) / name for name in output_names(case_id, save_probabilities=save_probabilities)]


def write_prediction(out_dir: str | Path, case: CaseFiles, probs: np.ndarray, *, save_probabilities: bool,
                     largest_component: Sequence[int] = ()) -> Path:
    """Write one case's outputs atomically (probabilities first, the label map last).

    Args:
        out_dir: the prediction folder (created if missing).
        case: the predicted case; its first image file gives the header and affine.
        probs: ``(K, Z, Y, X)`` probabilities on the original grid.
        save_probabilities: also write ``<case>.npz``.
        largest_component: classes that keep only their largest connected component in the label map.

    Returns:
        The label map's path.
    """
    files = output_files(out_dir, case.case_id, save_probabilities=save_probabilities)
    if save_probabilities:
        with atomic_path(files[0]) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=probs.astype(np.float16))
    header = read_header(case.images[0])
    label = keep_largest_component(np.argmax(probs, axis=0).astype(np.uint8), largest_component)
    write_nifti(label, header.get_best_affine(), files[-1], dtype=np.uint8, header=header)
    return files[-1]


def predict_case(predict: Callable[[CaseFiles], np.ndarray], case: CaseFiles, out_dir: str | Path, *,
                 save_probabilities: bool, largest_component: Sequence[int] = ()) -> dict:
    """Predict and write one case (replacing its earlier outputs); a failure is returned, never raised, so the other
    cases go on.

    Args:
        predict: case -> ``(K, Z, Y, X)`` probabilities on the original grid (an ``EnsemblePredictor``).
        case: the case to predict.
        out_dir: the prediction folder.
        save_probabilities: also write ``<case>.npz``.
        largest_component: post-processing, see :func:`write_prediction`.

    Returns:
        ``{"case_id", "status": "done" | "failed", "error": "<case_id>: <problem>" | None, "seconds"}``.
    """
    start = time.perf_counter()
    record: dict[str, Any] = {"case_id": case.case_id, "status": "done", "error": None}
    try:
        write_prediction(out_dir, case, predict(case), save_probabilities=save_probabilities,
                         largest_component=largest_component)
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others
        error = str(exc) if isinstance(exc, CaseError) else f"{case.case_id}: {type(exc).__name__}: {exc}"
        record.update(status="failed", error=error.splitlines()[0] if error else case.case_id)
    record["seconds"] = time.perf_counter() - start
    return record
