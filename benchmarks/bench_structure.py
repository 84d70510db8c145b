"""Structure figures of the code base (issue 16): how the orchestrator's rooms depend on each other.

Prints, from the source alone (no imports are executed):

* the arrows between orchestrator rooms, which of them run both ways, and which run against
  the rooms' order (commands → report, sweep → hil → boards → training, checkpoints → runs →
  config, storage, progress, errors → workers) (goal: none of either);
* arrows from a library room up to ``commands`` or the CLI (goal: none);
* the number of imports inside function bodies, and how many of them are of the heavy
  libraries that stay local on purpose (torch, ray, mlflow, ...);
* functions longer than 60 / 80 / 100 lines, the longest named.

    python benchmarks/bench_structure.py [--list]
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "workers", "device_agents")
# Libraries whose import costs seconds; a function-local import of these is a choice, not a cycle.
HEAVY = {"torch", "ray", "mlflow", "onnx", "onnxruntime", "optuna", "matplotlib", "paramiko", "scipy",
         "torch_pruning", "pandas", "numpy", "safetensors", "PIL", "rich", "boto3", "botocore",
         "selenium", "plotly", "pyarrow", "pydantic"}


# The rooms' order, top first: a room imports only rooms on a lower level (or its own).
LEVELS = {"commands": 0, "report": 1, "sweep": 1, "hil": 2, "boards": 3, "training": 4, "checkpoints": 4,
          "runs": 5, "config": 6, "storage": 6, "progress": 6, "processes": 6, "orchestrator": 6, "errors": 7,
          "workers": 8, "device_agents": 8}


def against_order(arrows) -> list[tuple[str, str]]:
    """Arrows from a room to one on its own level or above it (a room unknown to LEVELS counts as wrong)."""
    return sorted(k for k in arrows if LEVELS.get(k[0], -1) >= LEVELS.get(k[1], -1))


def room_of(module: str) -> str | None:
    """The orchestrator room of a dotted module name (``orchestrator.sweep.runner`` -> ``sweep``)."""
    parts = module.split(".")
    if parts[0] != "orchestrator":
        return parts[0] if parts[0] in PACKAGES else None
    if len(parts) == 1:
        return "orchestrator"
    name = parts[1]
    return "commands" if name == "cli" else name


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(node: ast.AST, current: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = current.split(".")
            # a package's __init__ counts as the package itself
            base = base[: len(base) - node.level + (1 if current.endswith("__init__") else 0)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        return [mod]
    return []


def top_level_imports(tree: ast.Module, current: str) -> list[str]:
    """Modules a file imports when it is imported (module body, not function bodies)."""
    out = []
    for node in tree.body:
        out += imported_modules(node, current)
        if isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:` / `try: import x` still count
            for inner in ast.walk(node):
                out += imported_modules(inner, current)
    return out


def heavy_modules(tops: dict[str, list[str]]) -> set[str]:
    """Project modules whose import loads a heavy library (directly or through other project modules)."""
    heavy = {m for m, deps in tops.items() if any(d.split(".")[0] in HEAVY for d in deps)}
    changed = True
    while changed:
        changed = False
        for m, deps in tops.items():
            if m not in heavy and any(d in heavy or any(d.startswith(h + ".") for h in heavy) for d in deps):
                heavy.add(m)
                changed = True
    return heavy


def is_heavy(target: str, heavy: set[str]) -> bool:
    return target.split(".")[0] in HEAVY or target in heavy


def scan() -> dict:
    arrows: dict[tuple[str, str], list[str]] = defaultdict(list)
    tops: dict[str, list[str]] = {}
    local_imports: list[tuple[str, int, str]] = []
    long_functions: list[tuple[int, str]] = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mod = module_name(path)
            src = room_of(mod)
            tree = ast.parse(path.read_text(), filename=str(path))
            current = mod if path.name != "__init__.py" else mod + ".__init__"
            tops[mod] = top_level_imports(tree, current)
            seen: set[int] = set()  # an import inside nested functions is counted once
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    long_functions.append((length, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
                    for inner in ast.walk(node):
                        if id(inner) in seen:
                            continue
                        seen.add(id(inner))
                        for target in imported_modules(inner, current):
                            local_imports.append((str(path.relative_to(ROOT)), inner.lineno, target))
                for target in imported_modules(node, current):
                    dst = room_of(target)
                    if src and dst and src != dst and src not in PACKAGES:
                        arrows[(src, dst)].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return {"arrows": arrows, "local": local_imports, "long": sorted(long_functions, reverse=True),
            "heavy": heavy_modules(tops)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every offending place")
    args = parser.parse_args(argv)
    s = scan()
    arrows = s["arrows"]
    both = sorted({tuple(sorted(k)) for k in arrows if (k[1], k[0]) in arrows})
    upward = sorted(k for k in arrows if k[1] == "commands" and k[0] != "commands")
    print("orchestrator rooms and what they import:")
    rooms = sorted({a for a, _ in arrows} | {b for _, b in arrows})
    for room in rooms:
        deps = sorted(b for a, b in arrows if a == room)
        if deps:
            print(f"  {room:14s} -> {', '.join(deps)}")
    print(f"arrows that run both ways: {len(both)}"
          + (f" ({', '.join(a + '<->' + b for a, b in both)})" if both else ""))
    print(f"arrows up to commands/CLI: {len(upward)}" + (f" ({', '.join(a for a, _ in upward)})" if upward else ""))
    wrong = against_order(arrows)
    print(f"arrows against the rooms' order: {len(wrong)}" + (f" ({', '.join(a + '->' + b for a, b in wrong)})"
                                                               if wrong else ""))
    if args.list:
        for a, b in both:
            for k in ((a, b), (b, a)):
                for where in arrows[k]:
                    print(f"    {k[0]} -> {k[1]}: {where}")
    local = s["local"]
    heavy = [x for x in local if is_heavy(x[2], s["heavy"])]
    print(f"function-local imports: {len(local)} ({len(heavy)} of heavy libraries or of project modules that load "
          f"them, kept local on purpose; {len(local) - len(heavy)} others)")
    if args.list:
        for path, line, target in local:
            if not is_heavy(target, s["heavy"]):
                print(f"    {path}:{line} {target}")
    long = s["long"]
    for limit in (60, 80, 100):
        print(f"functions over {limit} lines: {sum(1 for n, _ in long if n > limit)}")
    for n, where in long[:8]:
        print(f"    {n:4d} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
