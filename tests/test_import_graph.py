"""The import graph points down and has no circle (the layers in tests/data/import_layers.toml).

Every import is read with ``ast``: at module level, inside functions and under
``TYPE_CHECKING`` alike, since a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS_FILE = Path(__file__).with_name("data") / "import_layers.toml"
PACKAGES = ("infermq", "stores", "routing", "producer", "workers", "migrations", "bench", "tests")


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    where: str  # path:line


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path, tree: ast.AST) -> Iterator[tuple[str, int]]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source, node.lineno
            for alias in node.names:
                yield f"{source}.{alias.name}", node.lineno


def import_edges() -> list[Edge]:
    modules = module_files()
    edges: set[Edge] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, line in imported_names(module, path, tree):
            if name in modules and name != module:
                edges.add(Edge(module, name, f"{path.relative_to(ROOT)}:{line}"))
    return sorted(edges, key=lambda e: (e.importer, e.imported, e.where))


def load_layers() -> tuple[list[tuple[str, int]], list[dict[str, str]]]:
    data = tomllib.loads(LAYERS_FILE.read_text())
    prefixes = [(prefix, rank) for rank, layer in enumerate(data["layers"])
                for prefix in layer["modules"]]
    return prefixes, data.get("allowed_upward", [])


def layer_of(module: str, prefixes: list[tuple[str, int]]) -> int:
    matches = [(len(prefix), rank) for prefix, rank in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of {LAYERS_FILE.name}: add its package there"
    return max(matches)[1]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_no_module_imports_a_layer_above_its_own() -> None:
    prefixes, allowed = load_layers()
    upward = [
        f"{e.where}: {e.importer} imports {e.imported}"
        for e in import_edges()
        if layer_of(e.imported, prefixes) > layer_of(e.importer, prefixes)
        and not any(e.importer == a["importer"] and within(e.imported, a["imported"])
                    for a in allowed)
    ]
    assert upward == [], "imports pointing up a layer:\n" + "\n".join(upward)


def test_every_allowed_upward_import_still_exists_and_says_why() -> None:
    _, allowed = load_layers()
    edges = import_edges()
    for entry in allowed:
        assert entry.get("reason", "").strip(), f"{entry} gives no reason"
        assert any(e.importer == entry["importer"] and within(e.imported, entry["imported"])
                   for e in edges), f"{entry} allows an import that no longer exists: remove it"


def test_import_graph_has_no_circle() -> None:
    graph: dict[str, list[Edge]] = {}
    for edge in import_edges():
        graph.setdefault(edge.importer, []).append(edge)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[Edge] = []
    circles: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        for edge in graph.get(module, []):
            if state.get(edge.imported) == 1:
                loop = path + [edge]
                start = next(i for i, e in enumerate(loop) if e.importer == edge.imported)
                steps = " -> ".join(f"{e.importer} ({e.where})" for e in loop[start:])
                circles.append(f"{steps} -> {edge.imported}")
            elif edge.imported not in state:
                path.append(edge)
                visit(edge.imported)
                path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == [], "circular imports:\n" + "\n".join(circles)
