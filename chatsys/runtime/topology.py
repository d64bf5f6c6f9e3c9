"""P, A and B (and Redis) as OS processes on loopback, started together and stopped in order.

One module for everyone who runs a local system: ``chatsys all`` (one of each, output on the
terminal), the lab and bench (N gateways, M replicas of A, K of B, output in log files), the
chaos harness and the system tests (which also kill, freeze and restart members). Children
are started and signalled by :mod:`chatsys.runtime.children`; what one member is, and how to
tell it serves, is :mod:`chatsys.runtime.members`.

No port is ever chosen for a chatsys child: each binds port 0 on its first start and reports
what it got through ``--ready-file`` (see :mod:`chatsys.runtime.ready`); the parent waits for
that file with a deadline and, if the child exits first, fails with the tail of its log. A
restart asks for the same ports again. Only the one gateway of ``chatsys all`` listens on the
port the user asked for.

Redis cannot report a port, so it is offered a random port from below the kernel's ephemeral
range and started again on another if that one is taken (it exits with "Address already in
use"); it is ours once its ``INFO`` names the pid we started.

Gateways on one port (``shared_port``): every gateway binds the same port with SO_REUSEPORT (the
kernel balances new connections across them, like a Service across pods), so gateways can be
added and removed while clients keep one address (:meth:`Topology.add_gateway`,
:meth:`Topology.remove_gateway`: the lab's autoscaler). The port is reserved by a socket that
binds it and never listens, as ``--workers`` does, so it stays ours however many gateways
serve; each gateway reports a metrics port of its own, since a request to the shared port
reaches any of them.

Stop order: gateways first (they drain: clients get 1001 and resume elsewhere with ``since``),
then A and B, then Redis. :meth:`Topology.stop` is shielded from cancellation and ends with
SIGKILL, so whoever runs it in a ``finally`` (or uses :meth:`Topology.running`) leaves no
process behind, on an error or a cancellation (Ctrl-C) alike.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx

from chatsys.runtime import ready
from chatsys.runtime.children import spawn, terminate
from chatsys.runtime.members import (
    PYTHON,
    REDIS_ATTEMPTS,
    REDIS_PORTS,
    Member,
    TopologyError,  # raised here too: callers import it from this module
    redis_command,
)
from chatsys.runtime.sockets import shared_port_socket

log = logging.getLogger("chatsys.topology")
READY_TIMEOUT = 60.0
KILL_TIMEOUT = 15.0
GRACE = 10.0
POLL = 0.05
STOP_ORDER = (("P",), ("A", "B"), ("redis",))


@dataclass(frozen=True)
class Route:
    """Where one gateway finds A and B (``host:port`` each); by default every gateway is
    routed to every replica."""

    a: Sequence[str]
    b: Sequence[str]


@dataclass
class Topology:
    """The processes of one local run, started by :meth:`start` and stopped by :meth:`stop`.

    ``out`` holds ``data/``, ``logs/NAME.log`` (unless ``log_files`` is false), the ready
    files, ``redis/`` and ``pids.json`` (rewritten as each child starts, so whoever started us
    can clean up even if we are killed)."""

    out: Path
    gateways: int = 1
    a_replicas: int = 1
    b_replicas: int = 1
    data_dir: Path | None = None  # default: out / "data"
    store: str = ""  # A's store; default SQLite, or a Redis we start when a_replicas > 1
    # A Redis of ours for A (its URL replaces ``store``); None: when a_replicas > 1 and no store.
    redis: bool | None = None
    redis_flags: Sequence[str] = ()
    a_flags: Sequence[str] = ()
    b_flags: Sequence[str] = ()
    gateway_flags: Sequence[str] = ()
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 0  # only with one gateway (`chatsys all --port`), or shared_port
    # Every gateway on one port (SO_REUSEPORT), so that gateways can be added and removed.
    shared_port: bool = False
    common_flags: Sequence[str] = ("--log-level", "info", "--shutdown-grace", "5")
    log_files: bool = True
    cwd: Path | None = None  # where `python -m chatsys` finds chatsys (bench's TARGET@DIR)
    grace: float = GRACE
    members: list[Member] = field(default_factory=list)
    _reserved: socket.socket | None = field(default=None, init=False, repr=False)
    _gateways_started: int = field(default=0, init=False, repr=False)  # names are not reused

    @property
    def gateway_urls(self) -> list[str]:
        """Where clients connect: one URL per gateway, or the one shared port."""
        return list(dict.fromkeys(f"http://{m.address}" for m in self.members_of("P")))

    def members_of(self, module: str) -> list[Member]:
        return [m for m in self.members if m.module == module]

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def targets(self) -> list[Member]:
        """The members with a ``/metrics`` endpoint (Redis has none)."""
        return [m for m in self.members if m.metrics_url]

    def describe(self) -> list[dict[str, object]]:
        return [{"name": m.name, "module": m.module, "address": m.address,
                 "metrics": m.metrics_url, "pid": m.pid, "command": m.command_line()}
                for m in self.members]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Topology]:
        """Started on entry, stopped on exit, even when the start fails half-way."""
        try:
            await self.start()
            yield self
        finally:
            await self.stop()

    async def start(self) -> None:
        """Start everything; return once every gateway's ``/readyz`` answers 200."""
        await self.start_backends()
        await self.start_gateways()

    async def start_backends(self) -> None:
        """Redis (if any), A and B; return once each has reported its ports."""
        if min(self.gateways, self.a_replicas, self.b_replicas) < 1:
            raise TopologyError("--gateways, --a-replicas and --b-replicas must be at least 1")
        if self.gateway_port and self.gateways > 1 and not self.shared_port:
            raise TopologyError("a fixed gateway port needs exactly one gateway")
        data = self.data_dir or self.out / "data"
        for directory in (self.out / "ready", self.out / "logs", data):
            directory.mkdir(parents=True, exist_ok=True)
        store = self.store
        if self.redis or (self.redis is None and not store and self.a_replicas > 1):
            store = await self._start_redis()
        store_flags = ["--store", store] if store else []
        grpc = ["--host", "127.0.0.1", "--data-dir", str(data), *self._common()]
        for i in range(self.a_replicas):
            await self._spawn(self._member(f"A-{i}", "A", [
                *PYTHON, "users", "chat", *grpc, *store_flags, *self.a_flags]))
        for i in range(self.b_replicas):
            await self._spawn(self._member(f"B-{i}", "B", [
                *PYTHON, "files", *grpc, *self.b_flags]))
        await self._wait_serving(self.members_of("A") + self.members_of("B"))

    async def start_gateways(self, routes: Sequence[Route] = ()) -> None:
        """The gateways, routed by ``routes`` (one per gateway; default: every A and B);
        return once each one's ``/readyz`` answers 200."""
        if self.shared_port and self._reserved is None:
            # Bound beside the gateways, never listening: it takes no connection, yet no
            # other program can take the port while gateways come and go.
            self._reserved = shared_port_socket(self.gateway_host, self.gateway_port)
            self.gateway_port = int(self._reserved.getsockname()[1])
        for route in routes or [self._every_route()] * self.gateways:
            await self._spawn(self._gateway(route))
        await self._wait_serving(self.members_of("P"))

    async def add_gateway(self, within: float = READY_TIMEOUT) -> Member:
        """One more gateway on the shared port, routed to every A and B; returns once it
        serves. On a failure it is stopped and forgotten, and TopologyError says why."""
        if self._reserved is None:
            raise TopologyError("gateways are added on a shared port: start with shared_port")
        member = self._gateway(self._every_route())
        await self._spawn(member)
        try:
            await self._wait_serving([member], within, watched=[member])
        except BaseException:  # a cancellation too: a gateway half started is not kept
            with anyio.CancelScope(shield=True):
                await self.kill(member)
            self._forget(member)
            raise
        return member

    async def remove_gateway(self, member: Member | None = None) -> tuple[Member, int]:
        """Stop one gateway of the shared port (default: the newest, as a ReplicaSet scaling
        down removes the most recently started pod first): it drains, so its clients get 1001
        and reconnect to the port, where the others take them. The member and its exit code."""
        gateways = self.members_of("P")
        if len(gateways) < 2:
            raise TopologyError("the last gateway is not removed: the port would go dark")
        member = member or gateways[-1]
        code = await self.stop_member(member)
        self._forget(member)
        return member, code

    def _every_route(self) -> Route:
        return Route([m.address for m in self.members_of("A")],
                     [m.address for m in self.members_of("B")])

    def _gateway(self, route: Route) -> Member:
        """The next gateway member (not started), on the shared port or on a port of its own."""
        wildcard = self.gateway_host in ("0.0.0.0", "::", "")
        a_list, b_list = ",".join(route.a), ",".join(route.b)
        member = self._member(f"P-{self._gateways_started}", "P", [
            *PYTHON, "gateway", *self._common(), *self.gateway_flags,
            "--host", self.gateway_host, "--users-addr", a_list, "--chat-addr", a_list,
            "--files-addr", b_list], host="127.0.0.1" if wildcard else self.gateway_host,
            shares_port=self.shared_port)
        member.ports = ready.Ports(self.gateway_port)
        self._gateways_started += 1
        return member

    def _forget(self, member: Member) -> None:
        """No longer ours to watch or stop (a removed gateway: its exit is not a death)."""
        self.members.remove(member)
        self._write_pids()

    def _common(self) -> list[str]:
        return ["--drain-timeout", "0", *self.common_flags]

    def _member(self, name: str, module: str, command: list[str], **kwargs: Any) -> Member:
        kwargs.setdefault("ready_path", self.out / "ready" / f"{name}.json")
        return Member(name, module, command,
                      log_path=self.out / "logs" / f"{name}.log" if self.log_files else None,
                      **kwargs)

    async def _spawn(self, member: Member) -> None:
        """Start ``member``'s process (again, on a restart), asking for its ports."""
        if member.ready_path is not None:
            member.ready_path.unlink(missing_ok=True)
        with anyio.CancelScope(shield=True):  # a child started is a child we can stop
            member.proc = await spawn(member.command_line(), log_path=member.log_path,
                                      cwd=self.cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        replaced, member.replaced = member.replaced, anyio.Event()
        if replaced is not None:
            replaced.set()
        if member not in self.members:
            self.members.append(member)
        self._write_pids()
        log.info("started %s (pid %d)", member.name, member.proc.pid)

    def _write_pids(self) -> None:
        (self.out / "pids.json").write_text(json.dumps(
            {m.name: m.proc.pid for m in self.members if m.proc}))

    def _failure(self, member: Member, why: str) -> TopologyError:
        hint = ""
        if member.module == "A" and self.a_replicas > 1:
            hint = (" — more than one replica of A shares its state through Redis "
                    "(--store redis://...); use --a-replicas 1 (SQLite) until A runs on Redis")
        return TopologyError(f"{why}{hint}".rstrip())

    async def _wait_serving(self, members: list[Member], within: float = READY_TIMEOUT, *,
                            watched: list[Member] | None = None) -> None:
        """Until every one of ``members`` serves; TopologyError (with its log) as soon as one
        of ``watched`` (default: every process started so far) exits, or after ``within``
        seconds."""
        async with httpx.AsyncClient(timeout=2.0) as http:
            with anyio.move_on_after(within) as scope:
                for member in members:
                    while True:
                        for started in self.members if watched is None else watched:
                            try:
                                started.check_alive()
                            except TopologyError as exc:
                                raise self._failure(started, str(exc)) from None
                        if await member.serves(http):
                            break
                        await anyio.sleep(POLL)
                    log.info("%s serving on %s", member.name, member.address)
        if scope.cancelled_caught:
            raise TopologyError(f"not ready within {within:.0f}s: "
                                + ", ".join(m.name for m in members))

    async def _start_redis(self) -> str:
        workdir = self.out / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        command = redis_command(workdir, list(self.redis_flags))
        for _ in range(REDIS_ATTEMPTS):
            member = self._member("redis", "redis", command, ready_path=None)
            member.ports = ready.Ports(random.randint(*REDIS_PORTS))
            await self._spawn(member)
            try:
                await self._wait_serving([member])
                return f"redis://127.0.0.1:{member.port}/0"
            except TopologyError:
                assert member.proc is not None
                if member.proc.returncode is None:
                    raise
            self.members.remove(member)
            log.info("redis could not listen on %d (exit %s): another port", member.port,
                     member.proc.returncode)
        raise TopologyError(f"redis did not start in {REDIS_ATTEMPTS} attempts\n{member.tail()}")

    async def kill(self, member: Member) -> None:
        """SIGKILL ``member``'s process group and wait until it is gone (its ports free)."""
        member.expected_exit = True
        member.signal(signal.SIGKILL)
        if member.proc is not None:
            with anyio.fail_after(KILL_TIMEOUT):
                await member.proc.wait()

    async def restart(self, member: Member, within: float = READY_TIMEOUT) -> None:
        """Start ``member`` again on the ports it reported at its first start (stopping it
        first if it still runs), and return once it serves. A start that fails (its port
        still held by a dying process, say) is tried again until ``within`` seconds."""
        await self.stop_member(member)
        with anyio.move_on_after(within):
            while True:
                await self._spawn(member)
                try:
                    await self._wait_serving([member], within, watched=[member])
                    member.expected_exit = False
                    return
                except TopologyError as exc:
                    log.warning("%s did not come back (%s); starting it again", member.name,
                                str(exc).splitlines()[0])
                    await self.kill(member)
                await anyio.sleep(0.5)
        await self.kill(member)
        raise TopologyError(f"{member.name} did not come back within {within:.0f}s\n"
                            f"{member.tail()}")

    async def exited_on_its_own(self, member: Member) -> anyio.abc.Process:
        """Wait until ``member`` exits without this topology having killed, stopped or
        restarted it (across restarts: the wait follows the current process); that process."""
        while True:
            proc, replaced = member.proc, member.replaced
            assert proc is not None and replaced is not None
            await proc.wait()
            if not member.expected_exit and proc is member.proc:
                return proc
            await replaced.wait()  # ours: wait for the process that replaces it

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

    async def stop_member(self, member: Member) -> int:
        """SIGCONT (a frozen process cannot act on SIGTERM), SIGTERM, SIGKILL after the
        grace; the exit code. Never raises, and is not cancelled half-way."""
        member.expected_exit = True
        if member.proc is None:
            return 0
        with anyio.CancelScope(shield=True):
            member.signal(signal.SIGCONT)
            return await terminate(member.name, member.proc, self.grace, whole_group=True)

    async def stop(self) -> dict[str, int]:
        """Stop gateways, then A and B, then Redis; returns each exit code. Never raises."""
        codes: dict[str, int] = {}
        with anyio.CancelScope(shield=True):
            for modules in STOP_ORDER:
                async with anyio.create_task_group() as tg:
                    async def stop_one(member: Member) -> None:
                        codes[member.name] = await self.stop_member(member)

                    for member in self.members:
                        if member.module in modules and member.proc is not None:
                            tg.start_soon(stop_one, member)
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        return codes
