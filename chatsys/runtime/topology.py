"""P, A and B (and Redis) as OS processes on loopback, started together and stopped in order.

One module for everyone who runs a local system: ``chatsys all`` (one of each, output on the
terminal), the lab and bench (N gateways, M replicas of A, K of B, output in log files) and the
tests. Children are supervised by :mod:`chatsys.runtime.children`.

No port is ever chosen for a child: every chatsys child binds port 0 and reports what it got
through ``--ready-file`` (see :mod:`chatsys.runtime.ready`); the parent waits for that file
with a deadline and, if the child exits first, fails with the tail of its log. Only the one
gateway of ``chatsys all`` listens on the port the user asked for.

Redis cannot report a port (``--port 0`` turns its TCP listener off), so it is offered a random
port from below the kernel's ephemeral range and started again on another if that one is
taken (it exits with "Address already in use"); its ``INFO`` must name the pid we started, so a
Redis that someone else already runs on the port is never mistaken for ours.

Stop order: gateways first (they drain: clients get 1001 and resume elsewhere with ``since``),
then A and B, then Redis.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx

from chatsys.runtime import ready
from chatsys.runtime.children import spawn, terminate

log = logging.getLogger("chatsys.topology")
READY_TIMEOUT = 60.0
GRACE = 10.0
REDIS_SERVER = shutil.which("redis-server")
REDIS_ATTEMPTS = 20
# Below Linux's default ephemeral range (32768-60999), so a port the kernel hands out to
# someone's outgoing connection or port-0 listener is not offered to Redis.
REDIS_PORTS = (20000, 32000)
PYTHON = [sys.executable, "-m", "chatsys"]
NOT_LISTENING = ready.Ports(0)


class TopologyError(RuntimeError):
    """The local topology could not start; the message says which process and why."""


@dataclass
class Member:
    """One process of the topology."""

    name: str  # P-0, A-1, B-0, redis
    module: str  # P, A, B, redis
    command: list[str]
    log_path: Path | None = None  # None: output goes to ours
    proc: anyio.abc.Process | None = None
    ports: ready.Ports = NOT_LISTENING
    host: str = "127.0.0.1"  # where to reach it

    @property
    def port(self) -> int:
        return self.ports.port

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where Prometheus reads it ("" for Redis, which has no ``/metrics``)."""
        if self.module == "P":
            return f"http://{self.address}/metrics"
        return f"http://127.0.0.1:{self.ports.metrics_port}/metrics" if self.ports.metrics_port \
            else ""

    def tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path} ---\n" + "\n".join(text)


@dataclass
class Topology:
    """The processes of one local run, started by :meth:`start` and stopped by :meth:`stop`.

    ``out`` holds ``data/``, ``logs/NAME.log`` (unless ``log_files`` is false), the ready
    files, and ``pids.json`` (rewritten as each child starts, so whoever started us can clean
    up even if we are killed)."""

    out: Path
    gateways: int = 1
    a_replicas: int = 1
    b_replicas: int = 1
    data_dir: Path | None = None  # default: out / "data"
    store: str = ""  # A's store; default SQLite, or a Redis we start when a_replicas > 1
    a_flags: Sequence[str] = ()
    b_flags: Sequence[str] = ()
    gateway_flags: Sequence[str] = ()
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 0  # only with one gateway: `chatsys all --port`
    common_flags: Sequence[str] = ("--log-level", "info", "--shutdown-grace", "5")
    log_files: bool = True
    cwd: Path | None = None  # where `python -m chatsys` finds chatsys (bench's TARGET@DIR)
    grace: float = GRACE
    members: list[Member] = field(default_factory=list)

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://{m.address}" for m in self.members if m.module == "P"]

    def targets(self) -> list[Member]:
        """The members with a ``/metrics`` endpoint (Redis has none)."""
        return [m for m in self.members if m.metrics_url]

    def describe(self) -> list[dict[str, object]]:
        return [{"name": m.name, "module": m.module, "address": m.address,
                 "metrics": m.metrics_url, "pid": m.proc.pid if m.proc else None,
                 "command": m.command} for m in self.members]

    async def start(self) -> None:
        """Start everything; return once every gateway's ``/readyz`` answers 200."""
        if min(self.gateways, self.a_replicas, self.b_replicas) < 1:
            raise TopologyError("--gateways, --a-replicas and --b-replicas must be at least 1")
        if self.gateway_port and self.gateways > 1:
            raise TopologyError("a fixed gateway port needs exactly one gateway")
        data = self.data_dir or self.out / "data"
        for directory in (self.out / "ready", self.out / "logs", data):
            directory.mkdir(parents=True, exist_ok=True)
        common = ["--drain-timeout", "0", *self.common_flags]
        store = self.store
        if not store and self.a_replicas > 1:
            store = await self._start_redis()
        store_flags = ["--store", store] if store else []
        grpc = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                "--data-dir", str(data), *common]
        for i in range(self.a_replicas):
            await self._spawn(Member(f"A-{i}", "A", [
                *PYTHON, "users", "chat", *grpc, *store_flags, *self.a_flags]))
        for i in range(self.b_replicas):
            await self._spawn(Member(f"B-{i}", "B", [*PYTHON, "files", *grpc, *self.b_flags]))
        await self._wait_reported([m for m in self.members if m.module in ("A", "B")])
        a_list = ",".join(m.address for m in self.members if m.module == "A")
        b_list = ",".join(m.address for m in self.members if m.module == "B")
        wildcard = self.gateway_host in ("0.0.0.0", "::", "")
        for i in range(self.gateways):
            await self._spawn(Member(f"P-{i}", "P", [
                *PYTHON, "gateway", *common, *self.gateway_flags, "--host", self.gateway_host,
                "--port", str(self.gateway_port), "--users-addr", a_list,
                "--chat-addr", a_list, "--files-addr", b_list],
                host="127.0.0.1" if wildcard else self.gateway_host))
        gateways = [m for m in self.members if m.module == "P"]
        await self._wait_reported(gateways)
        await self._wait_gateways_ready(gateways)

    async def _spawn(self, member: Member) -> None:
        ready_path = self.out / "ready" / f"{member.name}.json"
        ready_path.unlink(missing_ok=True)
        if member.module != "redis":
            member.command += ["--ready-file", str(ready_path)]
        if self.log_files:
            member.log_path = self.out / "logs" / f"{member.name}.log"
        member.proc = await spawn(member.command, log_path=member.log_path, cwd=self.cwd,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.members.append(member)
        (self.out / "pids.json").write_text(json.dumps(
            {m.name: m.proc.pid for m in self.members if m.proc}))
        log.info("started %s (pid %d)", member.name, member.proc.pid)

    def _failure(self, member: Member, why: str) -> TopologyError:
        hint = ""
        if member.module == "A" and self.a_replicas > 1:
            hint = (" — more than one replica of A shares its state through Redis "
                    "(--store redis://...); use --a-replicas 1 (SQLite) until A runs on Redis")
        return TopologyError(f"{member.name} {why}{hint}".rstrip())

    async def _wait_reported(self, members: list[Member]) -> None:
        """Read each member's ready file; A and B are then ready (they write it once their
        gRPC and metrics ports both listen)."""
        with anyio.move_on_after(READY_TIMEOUT) as scope:
            for member in members:
                assert member.proc is not None
                path = self.out / "ready" / f"{member.name}.json"
                try:
                    member.ports = await ready.wait(path, member.proc, member.tail)
                except ready.NotReady as exc:
                    raise self._failure(member, str(exc)) from None
                log.info("%s listening on %s", member.name, member.address)
        if scope.cancelled_caught:
            raise TopologyError(f"not ready within {READY_TIMEOUT:.0f}s: "
                                + ", ".join(m.name for m in members))

    async def _wait_gateways_ready(self, gateways: list[Member]) -> None:
        """A gateway listens before its pools reach A and B: wait for ``/readyz``."""
        async with httpx.AsyncClient(timeout=2.0) as client:
            with anyio.move_on_after(READY_TIMEOUT) as scope:
                for member in gateways:
                    while True:
                        for started in self.members:
                            self._check_alive(started)
                        with suppress(httpx.HTTPError):
                            if (await client.get(f"http://{member.address}/readyz")
                                    ).status_code == 200:
                                break
                        await anyio.sleep(0.05)
        if scope.cancelled_caught:
            raise TopologyError(f"not ready within {READY_TIMEOUT:.0f}s: "
                                + ", ".join(m.name for m in gateways))

    def _check_alive(self, member: Member) -> None:
        if member.proc is not None and member.proc.returncode is not None:
            raise self._failure(member, f"exited with {member.proc.returncode} while "
                                        f"starting\n{member.tail()}")

    async def _start_redis(self) -> str:
        if REDIS_SERVER is None:
            raise TopologyError("--a-replicas > 1 needs Redis, and redis-server is not installed")
        workdir = self.out / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(REDIS_ATTEMPTS):
            port = random.randint(*REDIS_PORTS)
            member = Member("redis", "redis", [
                REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)],
                ports=ready.Ports(port))
            await self._spawn(member)
            assert member.proc is not None
            with anyio.fail_after(READY_TIMEOUT):
                while member.proc.returncode is None:
                    if await redis_pid(port) == member.proc.pid:
                        return f"redis://127.0.0.1:{port}/0"
                    await anyio.sleep(0.05)
            self.members.remove(member)
            log.info("redis could not listen on %d (exit %s): another port", port,
                     member.proc.returncode)
        raise TopologyError(f"redis did not start in {REDIS_ATTEMPTS} attempts\n{member.tail()}")

    def exited(self) -> dict[str, int]:
        """Members that have already exited (before being asked to), with their codes."""
        return {m.name: m.proc.returncode for m in self.members
                if m.proc is not None and m.proc.returncode is not None}

    async def wait_any_exit(self) -> Member:
        """The first member to exit (for a supervisor that stops everything when one dies)."""
        first: list[Member] = []
        async with anyio.create_task_group() as tg:
            async def wait(member: Member) -> None:
                assert member.proc is not None
                await member.proc.wait()
                first.append(member)
                tg.cancel_scope.cancel()

            for member in self.members:
                tg.start_soon(wait, member)
        return first[0]

    async def stop(self) -> dict[str, int]:
        """Stop gateways, then A and B, then Redis; returns each exit code. Never raises."""
        codes: dict[str, int] = {}
        with anyio.CancelScope(shield=True):
            for modules in (("P",), ("A", "B"), ("redis",)):
                async with anyio.create_task_group() as tg:
                    async def stop_one(member: Member) -> None:
                        assert member.proc is not None
                        codes[member.name] = await terminate(member.name, member.proc,
                                                             self.grace, whole_group=True)

                    for member in self.members:
                        if member.module in modules and member.proc is not None:
                            tg.start_soon(stop_one, member)
        return codes


async def redis_pid(port: int, host: str = "127.0.0.1") -> int | None:
    """The pid of the Redis serving on ``host:port`` (None: nothing answers yet, or it is
    still loading its append-only file)."""
    try:
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"INFO\r\n")
            reply = b""
            with anyio.fail_after(2):
                while b"\r\n" not in reply:
                    reply += await stream.receive()
                header, _, body = reply.partition(b"\r\n")
                if not header.startswith(b"$"):
                    return None
                while len(body) < int(header[1:]):
                    body += await stream.receive()
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
        return None
    info = dict(line.split(":", 1) for line in body.decode(errors="replace").splitlines()
                if ":" in line)
    if info.get("loading") != "0":  # still replaying its append-only file
        return None
    return int(info["process_id"])
