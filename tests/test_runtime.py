"""What a domain keeps in the runtime (runtime.py `domain_part`): made once, its own in a
copy, closed with the runtime."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from callvault.generation import generation_reader
from callvault.runtime import Runtime
from tests.conftest import make_settings


class Part:
    pass


def new_part(_runtime: Runtime) -> Part:
    return Part()


async def test_a_domain_part_is_made_once_and_closed_with_the_runtime(tmp_path: Path) -> None:
    runtime = Runtime.build(make_settings(tmp_path, f"sqlite:///{tmp_path / 'callvault.db'}"))
    closed: list[Part] = []
    made = runtime.domain_part(Part, new_part, closed.append)
    assert runtime.domain_part(Part, new_part, closed.append) is made
    # a copy (as tests make with other settings) keeps its own
    assert dataclasses.replace(runtime).domain_part(Part, new_part) is not made
    await runtime.close()
    assert closed == [made]


async def test_the_generation_reader_closes_with_the_runtime(tmp_path: Path) -> None:
    runtime = Runtime.build(make_settings(tmp_path, f"sqlite:///{tmp_path / 'callvault.db'}"))
    reader = generation_reader(runtime)
    assert generation_reader(runtime) is reader
    assert reader.loop_reader is not None
    reader.loop_reader.scalar("SELECT 1")  # opens its connection
    await runtime.close()
    assert reader.loop_reader._connection is None
