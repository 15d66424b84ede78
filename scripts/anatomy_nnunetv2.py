"""nnU-Net v2's side of scripts/bench_anatomy.py: its own virtual environment, and plan / train / predict there.

    python scripts/anatomy_nnunetv2.py --setup [--venv .venv-nnunetv2]

creates the environment (``torch==2.13.0`` pinned, the CPU wheel on this machine, then ``nnunetv2``), copies
``nnunetv2_wall_budget.py`` in as the trainer ``nnUNetTrainer_WallBudget`` and prints the versions installed. The
benchmark calls the functions below; nothing here imports nnunetv2 or torch into this process.

torchvision is removed after the install: timm (a dependency of dynamic_network_architectures, used only by its
Primus / EVA networks) pulls it in, and the PyPI torchvision wheel is built against CUDA torch, so with the CPU
torch it fails on import ("operator torchvision::nms does not exist"; its _C.so needs libc10_cuda.so). nnU-Net v2's
plain U-Net never imports it, but ``-tr`` looks trainers up by importing the modules of
``nnunetv2/training/nnUNetTrainer/`` one by one, and its ``primus/`` subpackage imports timm. The lookup imports a
folder's own modules before its subpackages, so the trainer is installed at that top level (not in ``variants/``)
and is found before ``primus/`` is reached; the same lookup serves ``nnUNetv2_predict``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / ".venv-nnunetv2"
TRAINER = "nnUNetTrainer_WallBudget"
TRAINER_SOURCE = Path(__file__).resolve().parent / "nnunetv2_wall_budget.py"
TORCH_PIN = "torch==2.13.0"  # the CPU build on this machine's disk; unpinned, pip would pull a CUDA torch


def run_step(cmd: list[str], *, env: dict | None = None, log_file: Path | None = None) -> float:
    """Run ``cmd`` (output to ``log_file`` when given); returns its wall seconds; raises with the log's tail."""
    start = time.perf_counter()
    if log_file is None:
        subprocess.run(cmd, check=True, env=env)
        return time.perf_counter() - start
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {result.returncode}); last lines of {log_file}:\n{tail}")
    return time.perf_counter() - start


def _package_dir(venv: Path) -> Path | None:
    """The installed nnunetv2 package folder, or None when the environment cannot import it."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return None
    probe = subprocess.run([str(python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                           capture_output=True, text=True)
    return Path(probe.stdout.strip()) if probe.returncode == 0 else None


def setup_venv(venv: Path = DEFAULT_VENV, *, log=print) -> float:
    """Create (when it cannot import nnunetv2 yet) the environment and install the trainer; returns seconds spent."""
    start = time.perf_counter()
    if _package_dir(venv) is None:
        log(f"creating {venv} (torch CPU + nnunetv2; downloads only, a few minutes)")
        run_step([sys.executable, "-m", "venv", "--clear", str(venv)])
        pins = venv / "pins.txt"
        pins.write_text(TORCH_PIN + "\n")  # a constraint on every install, so no later step upgrades torch
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(pins)]
        log_file = venv / "install.log"  # pip's notices about this machine's local indexes would flood the terminal
        run_step(pip + [TORCH_PIN], log_file=log_file)
        run_step(pip + ["nnunetv2"], log_file=venv / "install_nnunetv2.log")
        run_step([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision"])
    package = _package_dir(venv)
    if package is None:
        raise RuntimeError(f"{venv}: nnunetv2 does not import after the install; remove the folder and rerun --setup")
    # Top level of the folder nnU-Net searches for -tr: it imports that level's modules before any subpackage, and
    # its primus/ subpackage imports timm, which needs the torchvision this environment cannot have (see above).
    shutil.copy2(TRAINER_SOURCE, package / "training" / "nnUNetTrainer" / f"{TRAINER}.py")
    return time.perf_counter() - start


def v2_env(work: Path, *, raw: Path, budget_s: float, iterations: int | None) -> dict:
    """Environment of every nnU-Net v2 command: its three folders under ``work``, the budget, no GPU."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"), NNUNET_WALL_BUDGET_S=str(budget_s),
               CUDA_VISIBLE_DEVICES="")
    env.pop("NNUNET_WALL_ITERATIONS", None)
    if iterations:
        env["NNUNET_WALL_ITERATIONS"] = str(iterations)
    return env


def plan_and_preprocess(venv: Path, env: dict, *, dataset_id: int, dataset_name: str, splits: Path,
                        log_file: Path) -> float:
    """``nnUNetv2_plan_and_preprocess -c 3d_fullres``, then this project's folds as its splits_final.json.

    Both tools must validate fold 0 on the same cases; nnU-Net v2 reads splits_final.json when it exists.
    Returns wall seconds.
    """
    seconds = run_step([str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "3d_fullres",
                    "-np", "2", "--verify_dataset_integrity"], env=env, log_file=log_file)
    target = Path(env["nnUNet_preprocessed"]) / dataset_name / "splits_final.json"
    target.write_text(json.dumps(json.loads(splits.read_text()), indent=2))
    return seconds


def train(venv: Path, env: dict, *, dataset_id: int, fold: int, log_file: Path) -> dict:
    """Train ``fold`` with the wall-budget trainer on the CPU; returns its wall_budget.json plus ``wall_s``."""
    seconds = run_step([str(venv / "bin" / "nnUNetv2_train"), str(dataset_id), "3d_fullres", str(fold), "-tr", TRAINER,
                    "-device", "cpu"], env=env, log_file=log_file)
    found = sorted(Path(env["nnUNet_results"]).glob(f"*/{TRAINER}__*/fold_{fold}/wall_budget.json"))
    if not found:
        raise RuntimeError(f"nnUNetv2_train ended without wall_budget.json; see {log_file}")
    return {**json.loads(found[-1].read_text()), "wall_s": seconds}


def predict(venv: Path, env: dict, *, dataset_id: int, fold: int, images: Path, out: Path, log_file: Path) -> float:
    """``nnUNetv2_predict`` of ``images`` (mirroring TTA, v2's default; checkpoint_final.pth) into ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    return run_step([str(venv / "bin" / "nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", str(dataset_id),
                 "-c", "3d_fullres", "-f", str(fold), "-tr", TRAINER, "-device", "cpu"], env=env, log_file=log_file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true", help="create or update the environment")
    parser.add_argument("--venv", default=str(DEFAULT_VENV), help="where the environment lives")
    args = parser.parse_args()
    if not args.setup:
        parser.error("nothing to do: pass --setup (the benchmark itself is scripts/bench_anatomy.py)")
    venv = Path(args.venv).resolve()
    seconds = setup_venv(venv)
    versions = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                              capture_output=True, text=True, check=True).stdout
    wanted = {p["name"]: p["version"] for p in json.loads(versions) if p["name"] in ("torch", "nnunetv2")}
    print(f"{venv}: {wanted}, trainer {TRAINER} installed ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
