"""The worker is a generic runner: it imports no domain, and no domain imports it (the entry
point gives it its job kinds: callvault/jobs.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import callvault

SRC = Path(callvault.__file__).parent
DOMAINS = ("recordings", "webhooks", "credentials", "accounts", "applications")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_worker_imports_no_domain() -> None:
    for path in (SRC / "worker").glob("*.py"):
        for module in _imports(path):
            assert not module.startswith(tuple(f"callvault.{d}" for d in DOMAINS)), (
                f"{path.name} imports {module}"
            )


def test_no_domain_imports_the_worker() -> None:
    for domain in DOMAINS:
        for path in (SRC / domain).glob("*.py"):
            assert not any(m.startswith("callvault.worker") for m in _imports(path)), (
                f"{domain}/{path.name} imports the worker"
            )
