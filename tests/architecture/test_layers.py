"""The layering rules of docs/layers.json hold in the code (issue 23): every file of the
package stands on a part, no `never` pair has an import, and no files import each other in a
loop. `python -m tests.architecture.imports` prints the whole picture."""

from __future__ import annotations

import ast

from tests.architecture.imports import (
    PACKAGE,
    Rules,
    _targets,
    broken_rules,
    cycles,
    file_edges,
    read_graph,
)


def test_every_file_stands_on_a_part() -> None:
    rules = Rules.load()
    assert [f for f in read_graph().files if rules.part_of(f) is None] == []


def test_no_rule_is_broken() -> None:
    broken = broken_rules(read_graph(), Rules.load())
    listing = [
        f"never {source} -> {target}: {i.source} -> {i.target} {list(i.names)}"
        for (source, target, _), found in broken.items()
        for i in found
    ]
    assert listing == []


def test_no_files_import_each_other_in_a_loop() -> None:
    assert cycles(file_edges(read_graph())) == []


def test_the_reader_sees_deferred_and_relative_imports() -> None:
    """The check can fail: an import inside a function, or a relative one, is an import of
    the design too."""
    source = PACKAGE / "recordings" / "service.py"
    tree = ast.parse(
        "def f():\n    from callvault.db import transaction\n    from ..webhooks import models\n"
    )
    found = {
        (str(path.relative_to(PACKAGE)), name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for path, name in _targets(source, node)
    }
    assert found == {("db.py", "transaction"), ("webhooks/models.py", "models")}
