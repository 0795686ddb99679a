"""The import graph of our packages, measured: modules, lines, cycles, imports that climb.

    python tests/support/import_graph.py [--modules] [--root CHECKOUT]

Layers as in ARCHITECTURE.md (top first; the middle three are siblings, which may not import
each other either). tests/test_layers.py uses :func:`cycles`; `make lint` checks the layers
with import-linter.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import grimp

LAYERS: list[set[str]] = [
    {"sandbox"},
    {"infra", "pipeline", "producers"},
    {"kafka_io"},
    {"schemas"},
    {"config"},
]
ROOT = Path(__file__).resolve().parents[2]


def packages(root: Path = ROOT) -> list[str]:
    return [p for layer in LAYERS for p in sorted(layer) if (root / p / "__init__.py").exists()]


def cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        work = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def imports_of_ours(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, of the checkout at ``root``."""
    sys.path.insert(0, str(root))
    try:
        graph = grimp.build_graph(*packages(root), cache_dir=None)
    finally:
        sys.path.remove(str(root))
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def _level(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def climbing(imports: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that go up a layer or sideways between siblings."""
    return sorted(
        (a, b)
        for a, bs in imports.items()
        for b in bs
        if a.split(".")[0] != b.split(".")[0] and _level(b) <= _level(a)
    )


def _lines(root: Path, module: str) -> int:
    path = root.joinpath(*module.split("."))
    file = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    return len(file.read_text().splitlines())


def main(argv: list[str]) -> None:
    root = Path(argv[argv.index("--root") + 1]).resolve() if "--root" in argv else ROOT
    imports = imports_of_ours(root)
    lines = {m: _lines(root, m) for m in imports}
    print(f"modules {len(imports)}, lines {sum(lines.values())}")
    found = cycles(imports)
    print(f"cycles {len(found)}", *(f"  {' <-> '.join(c)}" for c in found), sep="\n")
    up = climbing(imports)
    print(f"imports that climb a layer or cross to a sibling: {len(up)}")
    for (a, b), n in sorted(Counter((a.split(".")[0], b) for a, b in up).items()):
        print(f"  {a} -> {b}: {n}")
    if "--modules" in argv:
        for m in sorted(lines, key=lambda m: (-lines[m], m)):
            print(f"{lines[m]:6d} {m}")


if __name__ == "__main__":
    main(sys.argv[1:])
