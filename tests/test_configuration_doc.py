"""docs/configuration.md lists exactly the settings the code reads (issue 26): every
environment variable (config.ENVIRONMENT, which the tables are generated from) and every CLI
flag (read from the `callvault` command itself).

After adding a setting or a flag: `UPDATE_DOCS=1 .venv/bin/pytest tests/test_configuration_doc.py`
rewrites the generated parts of the page; the meaning of a new variable goes into
config.ENVIRONMENT, of a new flag into its `help`."""

from __future__ import annotations

import io
import os
import re
import tokenize
from pathlib import Path
from typing import Any

import typer

from callvault.cli import app
from callvault.config import ENVIRONMENT, OTHER_ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
# pinned in DESIGN.md, not read by the code yet (none today)
PENDING_VARIABLES: set[str] = set()
PENDING_FLAGS: dict[str, str] = {}
NAME = re.compile(r"CALLVAULT_[A-Z0-9_]*[A-Z0-9]")
THIRD_PARTY = re.compile(r"(AWS_[A-Z_]+|STORAGE_EMULATOR_HOST)")


def string_literals() -> list[str]:
    """Every string literal of the package (comments excluded: they read nothing)."""
    found = []
    for path in sorted((ROOT / "src" / "callvault").rglob("*.py")):
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if token.type == tokenize.STRING:
                found.append(token.string.strip("rbfRBF").strip("\"'"))
    return found


def read_by_the_code() -> tuple[set[str], set[str]]:
    """(CALLVAULT_* names, other variables) the code reads: a literal that is exactly a name
    is a read (`env.get("…")`, `ENV = "…"`); a CALLVAULT_* name inside a message counts too,
    so that no message names a setting the page does not explain."""
    literals = string_literals()
    ours = {name for literal in literals for name in NAME.findall(literal)}
    others = {literal for literal in literals if THIRD_PARTY.fullmatch(literal)}
    return ours, others


def commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    """Every leaf command under `group` (typer's click objects: told apart by their shape,
    as typer vendors its own click)."""
    found: list[tuple[str, Any]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            found += commands(command, path)
        else:
            found.append((path, command))
    return found


def flags() -> list[tuple[str, str, str, str]]:
    """(command, flag, default, help) of every option of every command, and the pending ones."""
    rows = []
    for path, command in commands(typer.main.get_command(app), "callvault"):
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            flag = " / ".join(sorted(param.opts, key=len, reverse=True))
            default = "" if param.is_flag or param.default in (None, ()) else f"`{param.default}`"
            rows.append((path, flag, default, " ".join((param.help or "").split())))
    known = {f"{path} {flag.split(' / ')[0]}" for path, flag, _, _ in rows}
    for name, help_text in PENDING_FLAGS.items():
        if name not in known:
            path, _, flag = name.rpartition(" ")
            rows.append((path, flag, "", help_text))
    return sorted(rows, key=lambda row: row[0])


def cell(text: str) -> str:
    return text.replace("|", "\\|")


ALSO = re.compile(r"\(also (CALLVAULT_[A-Z0-9_]+)\)")


def settings_table() -> str:
    """One table: every variable (with the flag that sets the same thing: its help says
    "(also CALLVAULT_…)"), then the flags of their own."""
    same_as: dict[str, list[str]] = {}
    alone = []
    for path, flag, default, help_text in flags():
        also = ALSO.search(help_text)
        if also:
            same_as.setdefault(also[1], []).append(f"`{path} {flag}`")
        else:
            alone.append((path, flag, default, help_text))
    lines = [
        "| environment variable | flag | default | meaning | read by |",
        "|---|---|---|---|---|",
    ]
    for setting in (*ENVIRONMENT, *OTHER_ENVIRONMENT):
        lines.append(
            f"| `{setting.name}` | {', '.join(same_as.get(setting.name, []))} "
            f"| {cell(setting.default)} | {cell(setting.meaning)} | {setting.processes} |"
        )
    for path, flag, default, help_text in alone:
        command = path.removeprefix("callvault ")
        lines.append(f"|  | `{path} {flag}` | {cell(default)} | {cell(help_text)} | {command} |")
    return "\n".join(lines) + "\n"


GENERATED = {"settings": settings_table}


def section(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated: {name} -->\n)(.*?)(<!-- end: {name} -->)", re.DOTALL)


def test_the_generated_tables_are_current() -> None:
    text = DOC.read_text()
    for name, render in GENERATED.items():
        match = section(name).search(text)
        assert match is not None, f"docs/configuration.md lost its '{name}' markers"
        if os.environ.get("UPDATE_DOCS"):
            text = section(name).sub(lambda m, r=render: m[1] + r() + m[3], text)  # type: ignore[misc]
            continue
        assert match[2] == render(), (
            f"docs/configuration.md '{name}' is stale: UPDATE_DOCS=1 pytest {__file__}"
        )
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(text)


def test_the_page_lists_exactly_the_variables_the_code_reads() -> None:
    ours, others = read_by_the_code()
    documented = set(NAME.findall(DOC.read_text()))
    catalogued = {setting.name for setting in ENVIRONMENT}
    assert catalogued == documented  # the page names no variable the list does not have
    assert ours - catalogued == set(), "read by the code, missing from config.ENVIRONMENT"
    assert catalogued - ours - PENDING_VARIABLES == set(), "listed, but read by no code"
    assert others <= {setting.name for setting in OTHER_ENVIRONMENT} | {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    }


def test_the_page_lists_exactly_the_flags_of_the_command() -> None:
    in_code = {f"{path} {flag.split(' / ')[0]}" for path, flag, _, _ in flags()}
    text = DOC.read_text()
    in_doc = {
        f"{path} {flag.split(' / ')[0]}"
        for path, flag in re.findall(r"`(callvault [a-z -]+?) (--[a-z-]+(?: / -[a-z])?)`", text)
    }
    assert in_doc - set(PENDING_FLAGS) == in_code - set(PENDING_FLAGS)
    # the pinned ones of DESIGN.md are there
    for pinned in (
        "callvault serve --no-worker",
        "callvault worker --metrics-port",
        "callvault ingest --sip-call-id",
    ):
        assert pinned in in_doc
