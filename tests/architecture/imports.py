"""The package's import graph, read from the source with `ast` (nothing is imported or run),
and the layering rules of docs/layers.json held against it.

`python -m tests.architecture.imports` prints the figures the closing notes of issue 23 quote:
modules, layers, cycles, and every rule that is broken, with the imports that break it.

An import counts wherever it stands: at the top, inside a function (deferred) or under
`TYPE_CHECKING` — a deferred import is still a dependency of the design.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "callvault"
RULES = ROOT / "docs" / "layers.json"


@dataclass(frozen=True)
class Import:
    source: str  # path of the importing file, relative to ROOT
    target: str  # path of the imported file, relative to ROOT
    names: tuple[str, ...]


@dataclass
class Graph:
    files: list[str]
    imports: list[Import] = field(default_factory=list)


def _module_file(dotted: str) -> Path | None:
    """The file of `callvault.a.b`: a/b.py, or a/b/__init__.py; None outside the package."""
    parts = dotted.split(".")
    if parts[0] != "callvault":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _dotted(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[Path, str]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            found = _module_file(alias.name)
            if found is not None:
                yield found, alias.name.rsplit(".", 1)[-1]
        return
    module = node.module or ""
    if node.level:
        package = _dotted(path).split(".")
        if path.name != "__init__.py":
            package.pop()
        package = package[: len(package) - node.level + 1]
        module = ".".join([*package, module] if module else package)
    for alias in node.names:
        # `from callvault.x import y`: y is a module of its own, or a name of x
        found = _module_file(f"{module}.{alias.name}")
        if found is not None:
            yield found, alias.name
            continue
        found = _module_file(module)
        if found is not None:
            yield found, alias.name


def read_graph() -> Graph:
    files = sorted(PACKAGE.rglob("*.py"))
    graph = Graph(files=[str(path.relative_to(ROOT)) for path in files])
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        found: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target, name in _targets(path, node):
                    if target != path:
                        found.setdefault(str(target.relative_to(ROOT)), []).append(name)
        source = str(path.relative_to(ROOT))
        graph.imports.extend(
            Import(source, target, tuple(sorted(set(names)))) for target, names in found.items()
        )
    return graph


@dataclass(frozen=True)
class Rules:
    parts: dict[str, list[str]]  # part -> files and folders (folders end with "/")
    never: list[tuple[str, str, str]]

    @classmethod
    def load(cls, path: Path = RULES) -> Rules:
        data = json.loads(path.read_text())
        parts = {name: part["is"] for name, part in data["parts"].items()}
        return cls(parts=parts, never=[(a, b, why) for a, b, why in data["never"]])

    def part_of(self, file: str) -> str | None:
        best: tuple[int, str] | None = None
        for name, places in self.parts.items():
            for place in places:
                if file == place or (place.endswith("/") and file.startswith(place)):
                    if best is None or len(place) > best[0]:
                        best = (len(place), name)
        return best[1] if best else None


def broken_rules(graph: Graph, rules: Rules) -> dict[tuple[str, str, str], list[Import]]:
    """Each `never` pair that some import breaks, with those imports."""
    broken: dict[tuple[str, str, str], list[Import]] = {}
    for rule in rules.never:
        source_part, target_part, _ = rule
        for found in graph.imports:
            if (
                rules.part_of(found.source) == source_part
                and rules.part_of(found.target) == target_part
            ):
                broken.setdefault(rule, []).append(found)
    return broken


def unit_of(file: str) -> str:
    """The unit the figures count: a top-level module, or a whole subpackage."""
    relative = Path(file).relative_to("src/callvault")
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def unit_edges(graph: Graph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {unit_of(file): set() for file in graph.files}
    edges.pop("__init__", None)
    for found in graph.imports:
        source, target = unit_of(found.source), unit_of(found.target)
        if source != target and target != "__init__" and source != "__init__":
            edges[source].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def file_edges(graph: Graph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {file: set() for file in graph.files}
    for found in graph.imports:
        edges[found.source].add(found.target)
    return edges


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """Floor 1 imports nothing of ours; every other unit stands one above the highest it
    imports (units of one cycle share a floor)."""
    group_of = {member: tuple(group) for group in cycles(edges) for member in group}
    result: dict[str, int] = {}

    def floor(node: str) -> int:
        if node in result:
            return result[node]
        group = group_of.get(node, (node,))
        for member in group:
            result[member] = 0  # provisional: a cycle's own edges do not raise it
        below = [
            floor(target)
            for member in group
            for target in edges.get(member, ())
            if target not in group
        ]
        level = 1 + max(below, default=0)
        for member in group:
            result[member] = level
        return level

    for node in edges:
        floor(node)
    return result


def summary() -> str:
    graph = read_graph()
    rules = Rules.load()
    units = unit_edges(graph)
    lines = [
        f"files: {len(graph.files)}, imports between them: {len(graph.imports)}",
        f"units (top-level modules and subpackages): {len(units)}, "
        f"imports between units: {sum(len(t) for t in units.values())}",
        f"floors of units: {max(floors(units).values())}",
        f"cycles of units: {cycles(units) or 'none'}",
        f"cycles of files: {cycles(file_edges(graph)) or 'none'}",
    ]
    unplaced = [file for file in graph.files if rules.part_of(file) is None]
    lines.append(f"files on no part of docs/layers.json: {unplaced or 'none'}")
    broken = broken_rules(graph, rules)
    lines.append(f"rules broken: {len(broken)} of {len(rules.never)}")
    for (source, target, why), found in broken.items():
        lines.append(f"  never {source} -> {target} ({why}):")
        lines.extend(f"    {i.source} -> {i.target} {list(i.names)}" for i in found)
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
