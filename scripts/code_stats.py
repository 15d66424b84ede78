"""Size and shape of the package: lines per package, the largest module and function, import cycles.

    python scripts/code_stats.py                 # this checkout
    python scripts/code_stats.py --root /tmp/old  # another checkout (e.g. `git worktree add /tmp/old REV`)

Lines are physical lines of ``.py`` files. Cycles: between packages (``nnunet_ray/<package>/``, a top-level module
counting as its own package) over every import, lazy ones included; and between modules over top-level imports.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path


def _imports(tree: ast.AST, *, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only and isinstance(tree, ast.Module) else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.startswith("nnunet_ray.")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from its first node)."""
    found: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> None:
        if node in path:
            cycle = path[path.index(node):]
            if sorted(cycle) not in [sorted(c) for c in found]:
                found.append(cycle)
            return
        if node in done:
            return
        path.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    return found


def stats(root: Path) -> dict:
    package = root / "nnunet_ray"
    lines: dict[str, int] = defaultdict(int)
    modules: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    package_graph: dict[str, set[str]] = defaultdict(set)
    module_graph: dict[str, set[str]] = defaultdict(set)
    names = {".".join(p.relative_to(root).with_suffix("").parts) for p in package.rglob("*.py")}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        group = relative.parts[0].removesuffix(".py")
        text = path.read_text()
        tree = ast.parse(text)
        lines[group] += len(text.splitlines())
        modules.append((len(text.splitlines()), str(relative)))
        functions += [(n.end_lineno - n.lineno + 1, f"{relative}::{n.name}") for n in ast.walk(tree)
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno]
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for name in _imports(tree, top_level_only=False):
            package_graph[group].add(name.split(".")[1])
        for name in _imports(tree, top_level_only=True):
            target = name if name in names else name.rsplit(".", 1)[0]
            if target in names and target != module and not target.endswith("__init__"):
                module_graph[module].add(target)
        package_graph[group].discard(group)
    return {"lines": dict(sorted(lines.items())), "total": sum(lines.values()), "largest_module": max(modules),
            "largest_function": max(functions), "functions_over_40": sum(n > 40 for n, _ in functions),
            "modules_over_300": sum(n > 300 for n, _ in modules),
            "package_cycles": _cycles(package_graph), "module_cycles": _cycles(module_graph)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="a checkout")
    s = stats(parser.parse_args().root)
    print("lines per package: " + ", ".join(f"{k} {v}" for k, v in s["lines"].items()) + f"; total {s['total']}")
    print(f"largest module: {s['largest_module'][1]} ({s['largest_module'][0]} lines); modules over 300 lines: "
          f"{s['modules_over_300']}")
    print(f"largest function: {s['largest_function'][1]} ({s['largest_function'][0]} lines); functions over 40 "
          f"lines: {s['functions_over_40']}")
    print(f"package import cycles: {len(s['package_cycles'])} {s['package_cycles']}")
    print(f"module import cycles (top-level imports): {len(s['module_cycles'])} {s['module_cycles'][:5]}")


if __name__ == "__main__":
    main()
