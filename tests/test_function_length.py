"""No function or method in src/callvault is longer than 60 lines (migrations excepted): a long
function hides several steps under one name, and a reader should see each step by name.

Measured with ast: from the `def` line to the function's last line, decorators excluded."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parent.parent / "src" / "callvault"
LONGEST = 60


def _long_functions() -> list[str]:
    offenders: list[str] = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if relative.parts[0] == "migrations":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LONGEST:
                    offenders.append(f"{relative}:{node.name}:{length}")
    return offenders


def test_no_function_is_longer_than_sixty_lines() -> None:
    offenders = _long_functions()
    assert not offenders, f"functions over {LONGEST} lines: " + ", ".join(offenders)
