"""Sum py-spy's collapsed stacks (`--format raw`, what `--profile x.txt` writes) into the
frames that cost the most: by self time and by inclusive time, as % of all samples.

    .venv/bin/python bench/profile_summary.py /tmp/prof/base-throughput.txt [--top 25]
        [--match callvault]   # inclusive view: only frames whose text contains this
        [--layers]            # each sample charged to the layer of its innermost known frame
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy frames look like `function (path/to/file.py:123)`; the line makes frames unique
_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    name = _LINE.sub(")", frame.strip())
    name = name.replace(str(Path.cwd()) + "/", "")
    return name.replace(".venv/lib/python3.11/site-packages/", "")


# what each sample is spent in, by the innermost frame that names one of these (first match
# wins: the statement layer before callvault's code that called it, and so on)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (structlog)", ("structlog", "logging/")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("SQL layer (SQLAlchemy)", ("sqlalchemy/",)),
    ("SQLite driver and its thread", ("aiosqlite", "sqlite_driver", "sqlite3")),
    ("webhook HTTP client", ("httpx/", "httpcore/", "h11/", "anyio/", "outbound/post_client")),
    ("signing (cryptography)", ("signing.py", "cryptography")),
    ("multipart parser", ("python_multipart",)),
    ("HTTP server (uvicorn)", ("uvicorn/",)),
    ("FastAPI / Starlette", ("fastapi/", "starlette/")),
    ("pydantic", ("pydantic",)),
    ("obstore (Python side)", ("obstore",)),
    ("thread hand-offs, file calls", ("concurrent/futures", "threads.py", "pathlib", "os.py")),
    ("callvault's own code", ("callvault/",)),
    ("asyncio", ("asyncio/",)),
)


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for layer, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return layer
    return "other"


def summarize_layers(path: Path) -> tuple[int, Counter[str]]:
    total = 0
    layers: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        total += int(count_text)
        layers[layer_of(stack.split(";"))] += int(count_text)
    return total, layers


def summarize(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        # py-spy --threads puts the thread first: not a frame
        frames = [f for f in frames if not f.startswith("thread (")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return total, own, inclusive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="inclusive view: frames containing this")
    parser.add_argument("--layers", action="store_true", help="samples by layer (LAYERS)")
    args = parser.parse_args()
    if args.layers:
        total, layers = summarize_layers(args.file)
        print(f"{total} samples, by the layer of the innermost known frame:")
        for layer, count in layers.most_common():
            print(f"  {100 * count / total:5.1f}%  {layer}")
        return 0
    total, own, inclusive = summarize(args.file)
    print(f"{total} samples")
    print("\nself time:")
    for name, count in own.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\ninclusive time:")
    shown = [(n, c) for n, c in inclusive.most_common() if args.match in n][: args.top]
    for name, count in shown:
        print(f"  {100 * count / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
