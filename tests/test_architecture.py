"""House rules that keep the architecture visible: only distributed/ imports ray; only loading/ imports DALI."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnunet_ray"
CORE_STAGES = ("data", "planning", "preprocessing", "loading", "model", "runs", "training", "inference", "evaluation")


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


def _core_modules() -> list[Path]:
    return sorted(p for stage in CORE_STAGES for p in (PACKAGE / stage).rglob("*.py"))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_distributed_imports_ray_and_only_loading_imports_dali(path):
    roots, package = _imported_roots(path), path.relative_to(PACKAGE).parts[0]
    if package != "distributed":
        assert not any(r == "ray" or r.startswith("ray.") for r in roots), f"{path} imports ray"
    if package != "loading":
        assert not any(r.startswith("nvidia") for r in roots), f"{path} imports nvidia.dali"


# The commands that never train: their drivers (and a laptop submitting them) need no DALI.
NO_TRAINING_DRIVERS = ("nnunet_ray.distributed.preprocess", "nnunet_ray.distributed.predict",
                       "nnunet_ray.distributed.cv_eval", "nnunet_ray.cli")


def test_plan_preprocess_predict_and_evaluate_drivers_load_no_dali():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in NO_TRAINING_DRIVERS) +
            "bad = [m for m in sys.modules if m.startswith('nvidia.dali')]\n"
            "print(bad[:5]); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_every_core_module_loads_neither_ray_nor_dali():
    modules = [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in _core_modules()
               if p.parent.name != "loading"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'nvidia.dali'))]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_loading_does_not_import_ray():
    code = ("import sys, importlib, pkgutil, nnunet_ray.loading as L\n"
            "[importlib.import_module('nnunet_ray.loading.' + m.name) for m in pkgutil.iter_modules(L.__path__)]\n"
            "sys.exit(1 if 'ray' in sys.modules else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _calls_print(path: Path) -> bool:
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
               for node in ast.walk(ast.parse(path.read_text())))


COMMAND_MODULES = {"cli.py", "jobs.py"}  # the console command and the job scripts' steps: they decide what prints


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name not in COMMAND_MODULES),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_code_logs_and_only_commands_print(path):
    # A Tune trial or a notebook can quiet logging; it cannot quiet print().
    assert not _calls_print(path), f"{path} calls print(); use logging.getLogger(__name__)"


def test_the_import_graph_has_no_cycle_between_packages_or_modules():
    # scripts/code_stats.py walks every import of the package, lazy ones included (package level).
    result = subprocess.run([sys.executable, str(PACKAGE.parent / "scripts" / "code_stats.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "package import cycles: 0 []" in result.stdout and "module import cycles (top-level imports): 0" in \
        result.stdout
