"""The webhooks domain imports neither recordings nor the worker (shared/layers.json: an event
carries what its delivery needs; a domain does not call the worker)."""

from __future__ import annotations

import ast
from pathlib import Path

import callvault.webhooks

FORBIDDEN = ("callvault.recordings", "callvault.worker")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_webhooks_import_neither_recordings_nor_the_worker() -> None:
    package = Path(callvault.webhooks.__file__).parent
    offending = {
        f"{path.name}: {module}"
        for path in package.rglob("*.py")
        for module in imported_modules(path)
        if module.startswith(FORBIDDEN)
    }
    assert not offending
