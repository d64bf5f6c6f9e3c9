"""What every benchmark script shares: latency summaries, file-descriptor limits, child
processes that are always cleaned up, and the process-tree RSS of a server.

Latency figures from several load processes are merged as raw samples, never as averages of
percentiles: a p99 of p99s is not a p99. The sample counts here (a few tens of thousands per
step) make exact merging cheaper than any histogram.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def summary(samples_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and nearest-rank percentiles of raw samples (milliseconds)."""
    n = len(samples_ms)
    if n == 0:
        return {"n": 0, "mean": None, "p50": None, "p99": None, "max": None}
    ordered = sorted(samples_ms)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * n) - 1)]

    return {"n": n, "mean": round(sum(ordered) / n, 3), "p50": round(rank(50), 3),
            "p99": round(rank(99), 3), "max": round(ordered[-1], 3)}


def raise_nofile(wanted: int) -> int:
    """Lift the soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit).

    Children inherit the soft limit, so raising it here before spawning a server raises it for
    the server too: 10,000 sockets need more than the usual 1,024 descriptors on both ends.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the calling (main) task, as Ctrl-C does under ``asyncio.run``, so the
    ``finally`` blocks that stop every child process run on either."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


# --- process trees ------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now (Linux /proc)."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
        todo.extend(children.get(p, []))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of VmRSS over ``pids`` (shared pages counted once per process, as ``ps`` does)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time consumed so far by ``pids`` (Linux /proc, clock-tick grain).

    CPU per message is far steadier than latency on a shared machine: a neighbour's burst
    delays our processes but does not make them do more work.
    """
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def find_child(root: int, *words: str) -> int | None:
    """The first process under ``root`` whose command line holds every one of ``words``."""
    for pid in process_tree(root):
        args = cmdline(pid)
        if all(w in args for w in words):
            return pid
    return None


# --- child processes ------------------------------------------------------------------------

class Children:
    """The load generators, reference servers and profilers of a run, each in its own
    session, stopped by :meth:`stop` or, at the latest, :meth:`aclose`.

    A chatsys target is not one of them: :mod:`chatsys.runtime.topology` starts and stops its
    processes. These are single processes, so stopping one signals only it, and only while
    asyncio has not reaped it (a reaped pid may already be someone else's).
    """

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, args: Sequence[str], *, stdin: int | None = subprocess.DEVNULL,
                    stdout: int | None = None, stderr: int | Any = None,
                    env: dict[str, str] | None = None, cwd: Path | None = None,
                    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
            limit=1 << 26,  # one JSON line from a load worker can hold every receipt of a step
            cwd=cwd or ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, grace: float = 8.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    async def aclose(self) -> None:
        """Stop everything still running, even while the caller is being cancelled."""
        procs = list(self.procs)
        if procs:
            await asyncio.shield(asyncio.gather(*(self.stop(p) for p in procs),
                                                return_exceptions=True))
