"""A real-anatomy segmentation task: grey and white matter of the MNI ICBM152 2009a template, varied per case.

    python scripts/anatomy_task.py --out /tmp/anatomy/task [--cases 10] [--test 2] [--seed 0] [--spacing 1.8 2.4]

The template (T1 and its grey / white matter probability maps, 1 mm) ships inside the nilearn wheel on PyPI;
nilearn is not installed: ``pip download --no-deps nilearn==0.14.1`` puts the wheel under ``OUT/cache`` and the
three NIfTI files are read out of it with zipfile. Labels: 0 background, 1 grey matter, 2 white matter (argmax of
(1 - gm - wm, gm, wm) inside the template's brain mask). Every case is its own random variation of the template:

- a random affine (rotation up to 10 degrees per axis, per-axis scale 0.9..1.1, translation up to 8 mm) and a
  smooth elastic displacement (up to about 4 mm), sampled once for image (cubic) and label (nearest neighbour);
- a coarser voxel grid, 1.8..2.4 mm drawn per axis, so preprocessing has to resample every case;
- gamma, a smooth multiplicative bias field, a random intensity scale and Rician noise; outside the
  (deformed) brain mask the image is 0, as in skull-stripped MRI.

Writes ``OUT/BrainAnatomy`` (MSD v1 layout: imagesTr, labelsTr, imagesTs, labelsTs, dataset.json) and
``OUT/nnunetv2_raw/Dataset981_BrainAnatomy`` (nnU-Net v2 raw layout, the same files hard-linked), and prints the
two folders and each case's shape and spacing. Case ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

NILEARN = "nilearn==0.14.1"
TEMPLATE_DIR = "nilearn/datasets/data/"
TEMPLATE_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
LABELS = {0: "background", 1: "grey_matter", 2: "white_matter"}
MSD_NAME = "BrainAnatomy"
V2_ID = 981
V2_NAME = f"Dataset{V2_ID}_{MSD_NAME}"
MARGIN_MM = 10.0  # field of view around the brain, so rotated / shifted brains stay inside it


@dataclass(frozen=True)
class Template:
    """The template cropped to its brain plus a margin, NIfTI axis order (x, y, z), 1 mm isotropic."""

    t1: np.ndarray  # float32, 0..1, 0 outside the brain
    label: np.ndarray  # uint8, LABELS
    mask: np.ndarray  # bool, the template's (skull-stripped) brain


def fetch_wheel(cache: Path) -> Path:
    """The nilearn wheel in ``cache``, downloaded (no dependencies, nothing installed) when missing."""
    found = sorted(cache.glob("nilearn-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        # Output captured: pip's notices about this machine's local package indexes would look like failures.
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", NILEARN, "-d",
                               str(cache)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip download {NILEARN} failed:\n{done.stderr[-2000:]}")
        found = sorted(cache.glob("nilearn-*.whl"))
    return found[-1]


def _read_member(wheel: zipfile.ZipFile, name: str) -> np.ndarray:
    raw = gzip.decompress(wheel.read(TEMPLATE_DIR + name))
    return np.asarray(nib.Nifti1Image.from_bytes(raw).dataobj, dtype=np.float32)


def load_template(wheel_path: Path) -> Template:
    """T1, label and brain mask from the wheel's template files (stored as uint8 0..255)."""
    with zipfile.ZipFile(wheel_path) as wheel:
        t1, gm, wm = (_read_member(wheel, TEMPLATE_FILES[k]) / 255.0 for k in ("t1", "gm", "wm"))
    # The probability maps bleed a voxel or two past the skull-stripped T1; a label there would have no signal.
    mask = t1 > 0
    label = np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0).astype(np.uint8)
    label[~mask] = 0
    nonzero = np.argwhere(mask)
    lo = np.maximum(nonzero.min(0) - int(MARGIN_MM), 0)
    hi = np.minimum(nonzero.max(0) + int(MARGIN_MM) + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    return Template(t1=t1[box].astype(np.float32), label=label[box], mask=mask[box])


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from three angles (radians) about x, y and z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray,
                  amplitude: float) -> np.ndarray:
    """Smooth random field on ``shape`` with maximum magnitude ``amplitude`` (white noise, Gaussian-filtered)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma_vox, mode="reflect")
    return field * (amplitude / max(float(np.abs(field).max()), 1e-6))


def template_coords(rng: np.random.Generator, tpl_shape: tuple[int, ...],
                    spacing: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Where each voxel of a new case's grid samples the template: (3, X, Y, Z) template voxel coordinates.

    The case grid covers the template's field of view at ``spacing`` (mm, x y z); a case point ``u`` (mm from the
    grid centre) samples the template at ``centre + R S u + t + d(u)``: rotation R, per-axis scale S, shift t,
    smooth elastic displacement d. The template is 1 mm, so its millimetres are its voxels.
    """
    shape = tuple(int(np.ceil(n / s)) for n, s in zip(tpl_shape, spacing, strict=True))
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)],
                                indexing="ij")).reshape(3, -1)
    linear = _rotation(rng.uniform(-1, 1, 3) * np.deg2rad(10)) @ np.diag(rng.uniform(0.9, 1.1, 3))
    shift = rng.uniform(-8, 8, 3)
    centre = (np.array(tpl_shape) - 1) / 2
    coords = (linear @ grid).reshape(3, *shape) + (centre + shift)[:, None, None, None]
    sigma = 12.0 / spacing  # displacements correlated over ~12 mm: folds-scale warps, not voxel jitter
    amplitude = rng.uniform(2.0, 4.0)
    for axis in range(3):
        coords[axis] += _smooth_field(rng, shape, sigma, amplitude)
    return coords, shape


def _intensity(rng: np.random.Generator, t1: np.ndarray, mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Gamma, bias field, scale and Rician noise on a sampled T1 (0..1); 0 outside ``mask``."""
    image = np.clip(t1, 0.0, 1.0) ** np.exp(rng.uniform(-0.3, 0.3))
    bias = np.exp(_smooth_field(rng, image.shape, 40.0 / spacing, rng.uniform(0.1, 0.3)))  # coil-like, ~40 mm
    scale = rng.uniform(300.0, 1200.0)  # MRI intensities have no unit: each scan its own range
    signal = image * bias * scale
    sigma = rng.uniform(0.01, 0.04) * scale
    # Rician: the magnitude of a complex signal whose two channels carry Gaussian noise.
    noisy = np.hypot(signal + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))
    return np.where(mask, noisy, 0.0).astype(np.float32)


def make_case(tpl: Template, seed: int, index: int, *,
              spacing_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Case ``index``: (image float32 (X, Y, Z), label uint8 (X, Y, Z), affine (4, 4) voxel -> mm)."""
    rng = np.random.default_rng([seed, index])  # per-case stream: case i never depends on the others
    spacing = rng.uniform(*spacing_range, size=3)
    coords, shape = template_coords(rng, tpl.t1.shape, spacing)
    # A coarse voxel averages its whole volume: blur the 1 mm template to about the new voxel size first.
    blurred = ndimage.gaussian_filter(tpl.t1, sigma=0.42 * spacing)
    t1 = ndimage.map_coordinates(blurred, coords, order=3, mode="constant", cval=0.0)
    label = ndimage.map_coordinates(tpl.label, coords, order=0, mode="constant", cval=0).astype(np.uint8)
    mask = ndimage.map_coordinates(tpl.mask.astype(np.uint8), coords, order=0, mode="constant", cval=0) > 0
    image = _intensity(rng, t1, mask, spacing)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * spacing + rng.uniform(-5, 5, 3)
    return image, label, affine


def _write(array: np.ndarray, affine: np.ndarray, path: Path, dtype: type) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _link(src: Path, dst: Path) -> None:
    """Hard link (the two layouts share bytes, so both tools read identical images); copy across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_v2_layout(msd: Path, v2: Path, train_ids: list[str], test_ids: list[str]) -> None:
    """nnU-Net v2's raw layout of the MSD folder: <case>_0000 images, labels, channel_names dataset.json."""
    for case in train_ids:
        _link(msd / "imagesTr" / f"{case}.nii.gz", v2 / "imagesTr" / f"{case}_0000.nii.gz")
        _link(msd / "labelsTr" / f"{case}.nii.gz", v2 / "labelsTr" / f"{case}.nii.gz")
    for case in test_ids:
        _link(msd / "imagesTs" / f"{case}.nii.gz", v2 / "imagesTs" / f"{case}_0000.nii.gz")
    meta = {"channel_names": {"0": "MRI"}, "labels": {name: k for k, name in LABELS.items()},
            "numTraining": len(train_ids), "file_ending": ".nii.gz", "name": MSD_NAME}
    (v2 / "dataset.json").write_text(json.dumps(meta, indent=4))


def _msd_json(train_ids: list[str], test_ids: list[str], seed: int, spacing_range: tuple[float, float]) -> dict:
    return {"name": MSD_NAME, "description": f"MNI ICBM152 2009a grey/white matter, random variations (seed {seed}, "
                                             f"spacing {spacing_range[0]:g}..{spacing_range[1]:g} mm)",
            "reference": "nilearn wheel: nilearn/datasets/data/mni_icbm152_*_09a_converted.nii.gz",
            "licence": "see the ICBM152 2009 licence", "release": "1.0", "tensorImageSize": "3D",
            "modality": {"0": "MRI"}, "labels": {str(k): v for k, v in LABELS.items()},
            "numTraining": len(train_ids), "numTest": len(test_ids),
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train_ids],
            "test": [f"./imagesTs/{c}.nii.gz" for c in test_ids]}


def build_task(out: Path, *, cases: int = 10, test: int = 2, seed: int = 0,
               spacing_range: tuple[float, float] = (1.8, 2.4), log=print) -> tuple[Path, Path]:
    """Write the MSD folder and its nnU-Net v2 twin under ``out``; returns (msd folder, v2 folder).

    A folder whose dataset.json records the same cases, seed and spacing range is kept as it is (dataset.json is
    written last, so its presence means complete), so reruns of the benchmark reuse the task; otherwise both
    layouts are written anew.
    """
    msd, v2 = out / MSD_NAME, out / "nnunetv2_raw" / V2_NAME
    train_ids = [f"brain_{i:03d}" for i in range(cases)]
    test_ids = [f"brain_{i:03d}" for i in range(cases, cases + test)]
    expected = _msd_json(train_ids, test_ids, seed, spacing_range)
    done = msd / "dataset.json"
    if done.is_file() and json.loads(done.read_text()) == expected and (v2 / "dataset.json").is_file():
        log(f"task exists: {msd}")
        return msd, v2
    for folder in (msd, v2):  # another seed or size, or a half-written task: start both layouts over
        shutil.rmtree(folder, ignore_errors=True)
    tpl = load_template(fetch_wheel(out / "cache"))
    for index, case in enumerate(train_ids + test_ids):
        image, label, affine = make_case(tpl, seed, index, spacing_range=spacing_range)
        split = "Tr" if index < cases else "Ts"
        _write(image, affine, msd / f"images{split}" / f"{case}.nii.gz", np.float32)
        _write(label, affine, msd / f"labels{split}" / f"{case}.nii.gz", np.uint8)
        counts = np.bincount(label.ravel(), minlength=3)
        log(f"{case} ({split}): shape {image.shape}, spacing {np.round(np.diag(affine)[:3], 2).tolist()} mm, "
            f"voxels gm {counts[1]} wm {counts[2]}")
    write_v2_layout(msd, v2, train_ids, test_ids)
    done.write_text(json.dumps(expected, indent=4))
    return msd, v2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the task, its nnU-Net v2 twin and the wheel cache")
    parser.add_argument("--cases", type=int, default=10, help="training cases")
    parser.add_argument("--test", type=int, default=2, help="test cases (labels in labelsTs)")
    parser.add_argument("--seed", type=int, default=0, help="variation seed; case i depends on (seed, i) only")
    parser.add_argument("--spacing", type=float, nargs=2, default=(1.8, 2.4), metavar=("MIN", "MAX"),
                        help="range of each case's per-axis voxel size, mm")
    args = parser.parse_args()
    if args.cases < 2 or args.test < 0 or not 0.5 <= args.spacing[0] <= args.spacing[1]:
        parser.error("--cases must be >= 2, --test >= 0 and --spacing MIN MAX with 0.5 <= MIN <= MAX")
    msd, v2 = build_task(Path(args.out).resolve(), cases=args.cases, test=args.test, seed=args.seed,
                         spacing_range=tuple(args.spacing))
    print(f"MSD layout: {msd}\nnnU-Net v2 layout: {v2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
