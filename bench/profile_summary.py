"""Sum py-spy's collapsed stacks (`--format raw`, what `--profile x.txt` writes) into the
frames that cost the most: by self time and by inclusive time, as % of all samples.

    .venv/bin/python bench/profile_summary.py /tmp/prof/base-throughput.txt [--top 25]
        [--match callvault]   # inclusive view: only frames whose text contains this
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
    args = parser.parse_args()
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
