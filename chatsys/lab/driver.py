"""The lab's native load driver: ``ChatUser``'s session at a fraction of Locust's CPU per user.

    python -m chatsys.lab.driver --host http://127.0.0.1:8080 --users 200 --spawn-rate 50 \\
        --run-time 30s --csv runs/d/locust
    python -m chatsys.lab.driver --host http://127.0.0.1:8080 --steps 1000,5000,10000 \\
        --hold 60 --spawn-rate 200 --csv runs/a/locust

Scenario A's high steps need tens of thousands of users on the box that also runs the system;
Locust with websocket-client spends too much CPU per user for that. This coordinator starts
``--workers`` processes of :mod:`chatsys.lab.driver_worker` (one asyncio loop each), gives each
its share of the users and of the loopback source addresses (one process holds at most
``ulimit -n`` sockets; one source address has ~28k ephemeral ports towards one server), merges
the stats deltas they send every second, and writes Locust's CSV files (``PREFIX_stats.csv``,
``PREFIX_stats_history.csv``, ``PREFIX_failures.csv``), so ``chatsys lab`` reads a driver run
as it reads a Locust run. ``PREFIX_driver.json`` adds what Locust does not say: the driver's
own CPU seconds per user-minute.

The run ends after the plan (the last step's hold, or ``--run-time``) or on SIGINT/SIGTERM;
either way the workers stop their users, send their last delta, and the files are final. Exit
status as Locust's: 0 when no request failed, 1 otherwise; 2 when a worker died or the
arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from chatsys.lab.driver_plan import Plan, UserOptions, WorkerConfig, source_addresses
from chatsys.lab.driver_stats import CsvWriter, Stats
from chatsys.lab.scenarios import ScenarioError, parse_duration
from chatsys.runtime import lifecycle
from chatsys.runtime.limits import raise_open_files
from chatsys.runtime.supervision import Policy, supervise

USERS_PER_WORKER = 10_000  # stays well under one process's 20,000 open files, uploads included
USERS_PER_SOURCE = 20_000  # of the ~28k ephemeral ports one source address has
EXIT_OK, EXIT_FAILURES, EXIT_BROKEN = 0, 1, 2
READY_TIMEOUT = 60.0
FINAL_TIMEOUT = 30.0
MAX_LINE = 1 << 26


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ScenarioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatsys.lab.driver", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True,
                        help="gateway URL; a comma list spreads users round-robin")
    parser.add_argument("--csv", type=Path, required=True, metavar="PREFIX",
                        help="write PREFIX_stats.csv, _stats_history.csv, _failures.csv, "
                             "_driver.json")
    shape = parser.add_argument_group("load shape")
    shape.add_argument("--users", type=int, help="users (one step), like Locust's -u")
    shape.add_argument("--steps", default="", help="stepped: comma list of user counts")
    shape.add_argument("--hold", type=float, default=120.0,
                       help="seconds each step holds once reached (default 120)")
    shape.add_argument("--spawn-rate", type=float, default=1.0, help="users started per second")
    shape.add_argument("--run-time", type=_duration,
                       help="stop after this long (20s, 5m, 1h30m); with --users, required")
    procs = parser.add_argument_group("processes and sockets")
    procs.add_argument("--workers", type=int, default=0,
                       help=f"worker processes (default: one per {USERS_PER_WORKER:,} users "
                            "of the last step)")
    procs.add_argument("--source-addresses", type=int, default=-1,
                       help="bind connections to 127.0.0.2 ... 127.0.0.(N+1) (loopback "
                            f"hosts only; default: one per {USERS_PER_SOURCE:,} users; 0: none)")
    chat = parser.add_argument_group("the user (locustfiles/chat.py's --chat-* options)")
    for f in fields(UserOptions):
        chat.add_argument(f"--chat-{f.name.replace('_', '-')}", dest=f.name,
                          type=type(f.default), default=f.default, help=f"default {f.default}")
    return parser


def plan_of(args: argparse.Namespace) -> Plan:
    if args.steps.strip():
        steps = tuple(int(s) for s in args.steps.replace(" ", "").split(",") if s)
        return Plan(steps, args.spawn_rate, args.hold, args.run_time)
    if not args.users or args.run_time is None:
        raise ValueError("give --users N with --run-time T, or --steps A,B,... with --hold S")
    return Plan.single(args.users, args.spawn_rate, args.run_time)


def say(text: str) -> None:
    print(f"driver: {text}", file=sys.stderr, flush=True)


class Driver:
    """The coordinator: workers up, the plan started, deltas merged, CSVs written each second."""

    def __init__(self, hosts: list[str], plan: Plan, options: UserOptions, prefix: Path,
                 workers: int, sources: list[str]) -> None:
        self.hosts, self.plan, self.options, self.prefix = hosts, plan, options, prefix
        self.workers = workers
        self.sources = sources
        self.stats = Stats()
        self.users = [0] * workers
        self.finals: set[int] = set()
        self.all_final = anyio.Event()
        self.broken: list[str] = []
        self.procs: list[anyio.abc.Process] = []
        self.user_seconds = 0.0

    def config(self, index: int) -> WorkerConfig:
        # Each address in one worker while there are enough; else workers share them.
        mine = self.sources[index::self.workers]
        if self.sources and not mine:
            mine = [self.sources[index % len(self.sources)]]
        return WorkerConfig(index, self.workers, self.hosts, asdict(self.plan),
                            asdict(self.options), mine)

    async def main(self, stop: anyio.Event) -> int:
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        writer = CsvWriter(self.prefix)
        started = time.time()
        try:
            await self._run(stop, writer)
        finally:
            with anyio.CancelScope(shield=True):
                await self._reap()
                writer.tick(self.stats, sum(self.users), time.time())
                writer.close()
        return self._summary(time.time() - started)

    async def _run(self, stop: anyio.Event, writer: CsvWriter) -> None:
        for k in range(self.workers):
            self.procs.append(await anyio.open_process(
                [sys.executable, "-m", "chatsys.lab.driver_worker",
                 json.dumps(self.config(k).to_json())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None))
        readers = [BufferedByteReceiveStream(p.stdout) for p in self.procs if p.stdout]
        with anyio.fail_after(READY_TIMEOUT):
            for reader in readers:
                await reader.receive_until(b"\n", MAX_LINE)
        start_at = time.time() + 1.0
        await self._send_all({"op": "start", "at": start_at})
        say(f"{self.workers} worker(s), {len(self.sources)} source address(es), "
            f"{self.plan.peak} users at most, {self.plan.duration:.0f} s")
        async with anyio.create_task_group() as tg:
            for k, reader in enumerate(readers):
                tg.start_soon(self._read, k, reader)
            tg.start_soon(partial(supervise, "csv writer", partial(self._write, writer),
                                  policy=Policy.RESTART))
            with anyio.move_on_after(start_at + self.plan.duration - time.time()):
                await stop.wait()
            await self._send_all({"op": "stop"})
            with anyio.move_on_after(FINAL_TIMEOUT):
                await self.all_final.wait()
            tg.cancel_scope.cancel()

    async def _send_all(self, command: dict[str, object]) -> None:
        line = (json.dumps(command) + "\n").encode()
        for proc in self.procs:
            if proc.stdin is not None and proc.returncode is None:
                try:
                    await proc.stdin.send(line)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # that worker is gone; _read has reported it

    async def _read(self, k: int, reader: BufferedByteReceiveStream) -> None:
        """Merge worker ``k``'s deltas until its final one (or its end)."""
        while True:
            try:
                line = await reader.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                self.broken.append(f"worker {k} exited before its final stats")
                say(self.broken[-1])
                self._final(k)
                return
            message = json.loads(line)
            self.stats.merge(message["stats"])
            self.users[k] = int(message["users"])
            if message.get("final"):
                self._final(k)
                return

    def _final(self, k: int) -> None:
        self.finals.add(k)
        if len(self.finals) == self.workers:
            self.all_final.set()

    async def _write(self, writer: CsvWriter) -> None:
        """History and totals once a second, after the workers' deltas for that second."""
        while True:
            await anyio.sleep(1.3 - time.time() % 1.0)
            users = sum(self.users)
            self.user_seconds += users
            writer.tick(self.stats, users, time.time())

    async def _reap(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                await proc.stdin.aclose()
            with anyio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            if proc.returncode not in (0, None) and not self.broken:
                self.broken.append(f"a worker exited with {proc.returncode}")

    def _summary(self, wall: float) -> int:
        """``PREFIX_driver.json``: CPU seconds of the coordinator and its workers per
        user-minute (the figure that says how many users the box can drive)."""
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
        user_minutes = self.user_seconds / 60
        total = self.stats.total()
        summary = {
            "workers": self.workers, "source_addresses": self.sources, "hosts": self.hosts,
            "plan": asdict(self.plan), "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 2), "user_minutes": round(user_minutes, 2),
            "cpu_seconds_per_user_minute": round(cpu / user_minutes, 4) if user_minutes else None,
            "peak_users": self.plan.peak, "requests": total.count, "failures": total.failures,
            "broken": self.broken,
        }
        Path(f"{self.prefix}_driver.json").write_text(json.dumps(summary, indent=2))
        say(f"{total.count} requests, {total.failures} failures, {cpu:.1f} CPU s for "
            f"{user_minutes:.1f} user-minutes")
        if self.broken:
            return EXIT_BROKEN
        return EXIT_FAILURES if total.failures else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = plan_of(args)
        hosts = [h for h in args.host.split(",") if h]
        if any(urlsplit(h).scheme != "http" for h in hosts):
            raise ValueError("the native driver speaks plain http:// (use Locust for https)")
        count = (args.source_addresses if args.source_addresses >= 0
                 else math.ceil(plan.peak / USERS_PER_SOURCE))
        sources = source_addresses(hosts, count)
    except ValueError as exc:
        parser.error(str(exc))
    workers = args.workers or max(1, math.ceil(plan.peak / USERS_PER_WORKER))
    raise_open_files()  # the workers inherit it
    options = UserOptions(**{f.name: getattr(args, f.name) for f in fields(UserOptions)})
    driver = Driver(hosts, plan, options, args.csv, workers, sources)
    result: list[int] = []

    async def run(stop: anyio.Event) -> None:
        result.append(await driver.main(stop))

    lifecycle.run(run, grace=FINAL_TIMEOUT + 10)
    return result[0] if result else EXIT_BROKEN


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
