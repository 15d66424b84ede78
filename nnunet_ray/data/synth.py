"""Deterministic synthetic segmentation tasks in MSD v1 layout, for demos and tests.

``nnunet-ray synth --out /tmp/Task99_Synth`` writes ``imagesTr``, ``labelsTr``, ``imagesTs``, ``dataset.json`` and,
for ``nnunet-ray evaluate``, the test cases' ground truth in ``labelsTs``.
Each case is a "body" (an elliptic cylinder; voxels outside it are exactly 0, and the first and last one or two
slices are empty, so crop-to-nonzero has something to crop on every axis) holding three classes:

- 1 "organ": a large ellipsoid, rotated in-plane;
- 2 "lesion": a smaller ellipsoid inside or next to the organ (it wins where they overlap);
- 3 "spot": a small blob, a few hundred voxels at ``size`` 64, elsewhere in the body.

Shapes, positions, sizes, spacing and affine are random per case. Intensities depend on the class, blurred
slightly (partial volume), with a smooth bias field, a per-case scale and Gaussian noise, so a network has to
learn the task rather than threshold it. Spacing is anisotropic (z about 3.3x in-plane, with fewer slices so
the physical extent is similar), affines are rotated, flipped and shifted. Case ``i`` depends only on
``(seed, i)``: the same seed writes the same arrays whatever the number of cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from nnunet_ray.config import ConfigError, SynthConfig, flag_name
from nnunet_ray.data.atomic import save_json
from nnunet_ray.data.dataset import DATASET_FILE
from nnunet_ray.data.nifti import write_nifti

CLASS_NAMES = {0: "background", 1: "organ", 2: "lesion", 3: "spot"}
# Mean intensity of (body, organ, lesion, spot) per MRI-like channel; each channel orders the tissues
# differently, so multi-modal inputs carry complementary contrast as BraTS's do.
_MRI_MEANS = np.array([[100, 160, 60, 250], [120, 70, 200, 40], [80, 130, 180, 30], [150, 90, 110, 220]],
                      dtype=np.float32)
_MRI_NAMES = ("FLAIR", "T1w", "t1gd", "T2w")
# Hounsfield units of (body soft tissue, organ, lesion, spot). Outside the body is 0, not air (-1000), so
# crop-to-nonzero (image > 0) finds the body as it does on MRI.
_CT_HU = np.array([40, 120, 200, 300], dtype=np.float32)


def _geometry(rng: np.random.Generator, size: int) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """Random shape (Z, Y, X), spacing (z, y, x) mm and a rotated, flipped, shifted affine (voxel x, y, z)."""
    in_plane = rng.uniform(0.7, 1.0)
    spacing = np.array([in_plane * rng.uniform(3.1, 3.6), in_plane, in_plane])
    jitter = max(1, size // 8)
    ny, nx = (size + rng.integers(-jitter, jitter + 1, size=2)).tolist()
    nz = max(8, round(size * in_plane / spacing[0]) + int(rng.integers(-1, 2)))
    angle = rng.uniform(-0.3, 0.3)  # radians, about the world z axis
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    flips = np.diag([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ flips @ np.diag(spacing[::-1])  # columns are voxel x, y, z
    affine[:3, 3] = rng.uniform(-150, 150, size=3)
    return (nz, ny, nx), spacing, affine


def _grid(shape: tuple[int, int, int], spacing: np.ndarray) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm, centred on the volume: three arrays broadcasting to (Z, Y, X)."""
    return [((np.arange(n) - (n - 1) / 2) * s).reshape([-1 if a == axis else 1 for a in range(3)])
            for axis, (n, s) in enumerate(zip(shape, spacing))]


def _ellipsoid(grid: list[np.ndarray], center: np.ndarray, radii: np.ndarray, *, angle: float = 0.0) -> np.ndarray:
    """Boolean (Z, Y, X) mask of an ellipsoid (mm), rotated by ``angle`` in the y-x plane."""
    z, y, x = (g - c for g, c in zip(grid, center))
    yr = np.cos(angle) * y + np.sin(angle) * x
    xr = -np.sin(angle) * y + np.cos(angle) * x
    inside: np.ndarray = (z / radii[0]) ** 2 + (yr / radii[1]) ** 2 + (xr / radii[2]) ** 2 <= 1.0
    return inside


def _nearest_voxel(center: np.ndarray, shape: tuple[int, int, int], spacing: np.ndarray) -> tuple[int, ...]:
    index = np.rint(center / spacing + (np.array(shape) - 1) / 2).astype(int)
    return tuple(np.clip(index, 0, np.array(shape) - 1).tolist())


def _label(rng: np.random.Generator, shape: tuple[int, int, int],
           spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw (body mask, label) for one case, both (Z, Y, X); every class is present."""
    grid, extent = _grid(shape, spacing), np.array(shape) * spacing
    body_r = np.array([np.inf, 0.46, 0.48]) * extent * rng.uniform(0.94, 1.04, size=3)
    body = _ellipsoid(grid, np.zeros(3), body_r)
    body[: rng.integers(1, 3)] = False
    body[shape[0] - rng.integers(1, 3):] = False
    organ_c = rng.uniform(-0.08, 0.08, size=3) * extent
    organ_r = rng.uniform([0.2, 0.2, 0.2], [0.3, 0.28, 0.28]) * extent
    lesion_c = organ_c + rng.uniform(-0.45, 0.45, size=3) * organ_r
    r = rng.uniform(0.4, 0.55) * organ_r[1:].min()
    lesion_r = np.array([max(r, 0.6 * spacing[0]), r, r * rng.uniform(0.8, 1.2)])
    phi = rng.uniform(0, 2 * np.pi)
    spot_c = np.array([rng.uniform(-0.2, 0.2) * extent[0], 0.6 * body_r[1] * np.sin(phi),
                       0.6 * body_r[2] * np.cos(phi)])
    r = 0.095 * extent[1:].mean()
    spot_r = np.array([max(r, 0.6 * spacing[0]), r, r])
    label = np.zeros(shape, dtype=np.uint8)
    label[_ellipsoid(grid, organ_c, organ_r, angle=rng.uniform(0, np.pi))] = 1
    label[_ellipsoid(grid, lesion_c, lesion_r, angle=rng.uniform(0, np.pi))] = 2
    label[_ellipsoid(grid, spot_c, spot_r)] = 3
    label[~body] = 0
    for cls, center in ((1, organ_c), (2, lesion_c), (3, spot_c)):
        if not (label == cls).any():  # tiny volumes: keep every class present in every case
            voxel = _nearest_voxel(center, shape, spacing)
            label[voxel], body[voxel] = cls, True
    return body, label


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field (about 0.55..1.45): linear ramps plus an in-plane quadratic, like MRI coils."""
    u = [g / (n * s) for g, n, s in zip(_grid(shape, spacing), shape, spacing)]  # each in [-0.5, 0.5]
    slopes, curve = rng.uniform(-0.2, 0.2, size=3), rng.uniform(-0.3, 0.3)
    field: np.ndarray = (1.0 + slopes[0] * u[0] + slopes[1] * u[1] + slopes[2] * u[2]
                         + curve * (u[1] ** 2 + u[2] ** 2))
    return field


def _image(rng: np.random.Generator, body: np.ndarray, label: np.ndarray, *, spacing: np.ndarray,
           channels: int, ct: bool) -> np.ndarray:
    """Intensities for one case: (C, Z, Y, X) float32, > 0 inside the body and exactly 0 outside."""
    tissue = np.where(body, label.astype(np.int64) + 1, 0)  # 0 outside, 1 body, 2 organ, 3 lesion, 4 spot
    image = np.empty((channels, *label.shape), dtype=np.float32)
    field: float | np.ndarray
    for c in range(channels):
        if ct and c == 0:  # calibrated HU: only a small per-case offset, no bias field
            means, scale, noise = _CT_HU + rng.uniform(-8, 8), 1.0, 10.0
            field = 1.0
        else:
            means = _MRI_MEANS[c % len(_MRI_MEANS)] * rng.uniform(0.9, 1.1, size=4)
            scale, noise = float(np.exp(rng.uniform(-0.4, 0.4))), 0.12 * float(means[0])
            field = _bias_field(rng, label.shape, spacing)
        table = np.concatenate([[0.0], means]).astype(np.float32)
        clean = ndimage.gaussian_filter(table[tissue], sigma=0.6 / spacing)  # ~0.6 mm partial-volume blur
        noisy = (clean * field + noise * rng.standard_normal(label.shape, dtype=np.float32)) * scale
        image[c] = np.where(body, np.maximum(noisy, 1.0), 0.0)
    return image


def synth_case(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate case ``index`` of the task ``cfg`` describes, in memory.

    Returns:
        (image, label, affine): image ``(C, Z, Y, X)`` float32, label ``(Z, Y, X)`` uint8 with classes 0..3,
        affine ``(4, 4)`` voxel (x, y, z) -> world mm; spacing is the affine's column norms, (z, y, x) reversed.
    """
    rng = np.random.default_rng([cfg.seed, index])  # per-case stream: case i never depends on other cases
    shape, spacing, affine = _geometry(rng, cfg.size)
    body, label = _label(rng, shape, spacing)
    image = _image(rng, body, label, spacing=spacing, channels=cfg.modalities, ct=cfg.ct)
    return image, label, affine


def _modality_names(cfg: SynthConfig) -> list[str]:
    if cfg.modalities == 1:
        return ["CT" if cfg.ct else "MRI"]
    names = [_MRI_NAMES[c] if c < len(_MRI_NAMES) else f"MR{c}" for c in range(cfg.modalities)]
    return ["CT"] + names[1:] if cfg.ct else names


def _dataset_json(cfg: SynthConfig, name: str, training: list[dict[str, str]], test: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"nnunet_ray synthetic task (seed {cfg.seed}, size {cfg.size})",
        "reference": "nnunet_ray.data.synth", "licence": "CC0", "release": "1.0",
        "tensorImageSize": "4D" if cfg.modalities > 1 else "3D",
        "modality": {str(c): modality for c, modality in enumerate(_modality_names(cfg))},
        "labels": {str(k): v for k, v in CLASS_NAMES.items()},
        "numTraining": cfg.cases, "numTest": cfg.test, "training": training, "test": test,
    }


def _check_new_folder(root: Path) -> None:
    """Refuse a ``--out`` that exists as a file or a non-empty folder (naming what is there)."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{flag_name('out')}: {root} exists and is not a folder")
    entries = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(f"{flag_name('out')}: {root} is not empty ({len(entries)} entries: {shown}); synth writes "
                          "a new task into a new or empty folder")


def make_synthetic_task(cfg: SynthConfig) -> Path:
    """Write a synthetic MSD v1 task folder at ``cfg.out``; its folder name is the dataset name.

    Training cases are ``synth_000``..., test cases (imagesTs, listed without labels; their ground truth goes to
    labelsTs) continue the numbering. ``cfg.out`` must be new or empty: writing over a dataset would replace
    its dataset.json and mix two tasks' files.
    Images are float32 (4D ``(x, y, z, c)`` NIfTI when ``cfg.modalities > 1``), labels uint8. dataset.json is
    written last, so a folder holding one is complete. Rewriting with the same config gives identical arrays.

    Args:
        cfg: the task to write (validated here).

    Returns:
        The task folder.

    Raises:
        ConfigError: an invalid ``cfg`` field, or ``cfg.out`` is a file or a non-empty folder.
    """
    cfg.validate()
    root = Path(cfg.out)
    _check_new_folder(root)
    training, test = [], []
    for index in range(cfg.cases + cfg.test):
        case_id = f"synth_{index:03d}"
        image, label, affine = synth_case(cfg, index)
        folder = "imagesTr" if index < cfg.cases else "imagesTs"
        write_nifti(image if cfg.modalities > 1 else image[0], affine, root / folder / f"{case_id}.nii.gz",
                    dtype=np.float32)
        if index < cfg.cases:
            write_nifti(label, affine, root / "labelsTr" / f"{case_id}.nii.gz", dtype=np.uint8)
            training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
        else:  # held-out ground truth: not listed in dataset.json (MSD lists test images only), for evaluation
            write_nifti(label, affine, root / "labelsTs" / f"{case_id}.nii.gz", dtype=np.uint8)
            test.append(f"./imagesTs/{case_id}.nii.gz")
    (root / "imagesTs").mkdir(parents=True, exist_ok=True)  # MSD layout has it even with no test cases
    meta = _dataset_json(cfg, root.name, training, test)
    save_json(root / DATASET_FILE, meta, indent=4)
    return root
