"""Top costs from py-spy's raw (collapsed) stacks: ``python -m bench.pyspy_top FILE [-n 25]``.

``bench.run --py-spy DIR`` records the gateway and A while the knee search runs; this turns one
recording into two short lists — where the samples are (self time, by function) and what they
are under (inclusive time, by function) — which is what docs/performance.md quotes. Idle
samples (the event loop waiting in epoll/select) are counted apart, so the shares are of busy
time.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

IDLE = ("select (selectors.py", "poll (selectors.py", "_run_once", "run_forever")
IDLE_LEAVES = ("select (selectors.py", "poll (selectors.py", "epoll", "wait (threading.py",
               "_worker (concurrent/futures/thread.py")


def load(path: Path) -> tuple[Counter[str], Counter[str], int, int]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        leaf = frames[-1]
        if any(marker in leaf for marker in IDLE_LEAVES):
            idle += n
            continue
        busy += n
        own[_short(leaf)] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    return own, inclusive, busy, idle


def _short(frame: str) -> str:
    """``func (path/to/module.py:line)`` → ``func (module.py)``: lines split one function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({tail})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pyspy_top", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("-n", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        own, inclusive, busy, idle = load(path)
        total = busy + idle
        print(f"== {path}: {total} samples, busy {busy} ({100 * busy / max(total, 1):.0f}%)")
        print("-- self time (share of busy samples)")
        for name, n in own.most_common(args.n):
            print(f"{100 * n / max(busy, 1):5.1f}%  {name}")
        print("-- inclusive time (share of busy samples)")
        for name, n in inclusive.most_common(args.n):
            print(f"{100 * n / max(busy, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
