"""The processes under test, all real, on loopback: Redis (AOF, ``appendfsync always``), two A
replicas on it, two B replicas sharing one directory, two gateways, and the partition proxy.

Gateway 0 reaches A-0 through the proxy and A-1 directly; gateway 1 reaches both directly.
Every process runs in its own session (``chatsys.runtime.children.spawn``) and logs to
``OUT/logs/NAME.log``. A, B and the gateways first bind port 0 and report the ports they got
(``--ready-file``, :mod:`chatsys.runtime.ready`); their commands are then rewritten with those
ports, so a restart brings a process back where the gateways (configured with fixed addresses)
expect it. Redis is offered random ports until one is free (it cannot report one), as
:mod:`chatsys.runtime.topology` does. ``Topology.stop`` stops everything; ``kill_all`` is the
synchronous last resort (SIGCONT + SIGKILL to every process group ever started), for Ctrl-C
and crashes.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx

from chaos.proxy import PartitionProxy
from chatsys.runtime import ready
from chatsys.runtime.children import spawn, terminate
from chatsys.runtime.topology import REDIS_ATTEMPTS, REDIS_PORTS, redis_pid

log = logging.getLogger("chaos.topology")
READY_TIMEOUT = 60.0
GRACE = 5.0
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
# Every process we started, for kill_all. A process group is signalled only while its leader
# is not yet reaped: once reaped, its pid (and so the group id) may belong to someone else's
# process on this shared machine, and killpg would hit it.
STARTED: list[anyio.abc.Process] = []
PYTHON = [sys.executable, "-m", "chatsys"]
COMMON = ["--host=127.0.0.1", "--log-level=info", "--drain-timeout=0.2", "--shutdown-grace=3"]


class TopologyError(RuntimeError):
    """A process could not start or died; the message names it and shows its log's tail."""


@dataclass
class Node:
    """One process of the topology; ``restart`` brings it back with the same command."""

    name: str  # redis, A-0, B-1, P-0 ...
    kind: str  # redis, A, B, P
    command: list[str]
    port: int  # 0 until the first start has reported it
    metrics_port: int | None
    log_path: Path
    ready_path: Path | None = None  # None: redis, which cannot report a port
    proc: anyio.abc.Process | None = None
    stopped_by_us: bool = False
    restarting: bool = False  # exits while a restart retries are that restart's business
    unexpected_exits: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def tail(self, lines: int = 15) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def start(self) -> None:
        self.stopped_by_us = False
        if self.ready_path is not None:
            self.ready_path.unlink(missing_ok=True)
        self.proc = await spawn(self.command, log_path=self.log_path,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        STARTED.append(self.proc)
        log.info("started %s (pid %d) on port %d", self.name, self.proc.pid, self.port)

    def signal(self, signum: int) -> None:
        """Signal the whole process group (helpers go with it), while its leader is unreaped."""
        if self.proc is not None and self.proc.returncode is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)

    async def kill(self) -> None:
        """SIGKILL, and wait until it is gone (so its port can be taken again)."""
        self.stopped_by_us = True
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            with anyio.fail_after(15):
                await self.proc.wait()

    async def stop(self) -> None:
        self.stopped_by_us = True
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        self.signal(signal.SIGTERM)  # the group, while its id is still ours
        await terminate(self.name, self.proc, GRACE)

    async def ready(self, client: httpx.AsyncClient) -> bool:
        if self.proc is None or self.proc.returncode is not None:
            raise TopologyError(f"{self.name} exited with "
                                f"{self.proc.returncode if self.proc else None}\n"
                                f"--- {self.log_path} ---\n{self.tail()}")
        if self.ready_path is None:
            return await redis_pid(self.port) == self.proc.pid
        reported = ready.read(self.ready_path)
        if reported is None:
            return False
        if self.port == 0:
            self._keep(reported)
        if self.kind == "P":
            try:
                return (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False
        return True  # A and B report once both their ports listen

    def _keep(self, reported: ready.Ports) -> None:
        """The ports of the first start, kept for every restart."""
        self.port = reported.port
        self.metrics_port = reported.port if self.kind == "P" else reported.metrics_port
        fixed = {"--port=0": f"--port={self.port}",
                 "--metrics-port=0": f"--metrics-port={self.metrics_port}"}
        self.command = [fixed.get(arg, arg) for arg in self.command]

    async def wait_ready(self, client: httpx.AsyncClient, within: float = READY_TIMEOUT) -> None:
        try:
            with anyio.fail_after(within):
                while True:
                    if await self.ready(client):
                        return
                    await anyio.sleep(0.1)
        except TimeoutError:
            raise TopologyError(f"{self.name} not ready within {within:.0f}s\n"
                                f"--- {self.log_path} ---\n{self.tail()}") from None

    async def exited_on_its_own(self) -> str:
        """Wait until the current process exits without us having stopped it."""
        while True:
            proc = self.proc
            if proc is not None:
                code = await proc.wait()
                if not (self.stopped_by_us or self.restarting) and proc is self.proc:
                    return f"{self.name} (pid {proc.pid}) exited on its own with {code}"
            await anyio.sleep(0.2)  # stopped by us: wait for the restart


@dataclass
class Topology:
    out: Path
    gateway_flags: list[str]
    nodes: dict[str, Node] = field(default_factory=dict)
    proxy: PartitionProxy | None = None

    def of_kind(self, kind: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == kind]

    @property
    def gateways(self) -> list[Node]:
        return self.of_kind("P")

    def unexpected_exits(self) -> list[str]:
        return [note for n in self.nodes.values() for note in n.unexpected_exits]

    async def watch(self, node: Node) -> None:
        """Record every exit the harness did not cause (that makes the run invalid), and
        start the process again so the run can go on and report everything else."""
        while True:
            note = await node.exited_on_its_own()
            log.error(note)
            node.unexpected_exits.append(note)
            try:
                await self.restart(node)
            except TopologyError as exc:
                node.unexpected_exits.append(f"{node.name} could not be restarted: {exc}")
                return

    def plan(self) -> None:
        """Choose commands (nothing runs yet); the gateways' come once A, B and the proxy have
        their ports (:meth:`start`)."""
        logs, data = self.out / "logs", self.out / "data"
        for directory in (logs, self.out / "ready"):
            directory.mkdir(parents=True, exist_ok=True)
        redis_dir, files_dir = data / "redis", data / "files"
        redis_dir.mkdir(parents=True, exist_ok=True)
        files_dir.mkdir(parents=True, exist_ok=True)
        self.add("redis", "redis", [
            REDIS_SERVER, "--bind", "127.0.0.1", "--dir", str(redis_dir), "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--protected-mode", "yes",
            "--maxmemory-policy", "noeviction"])
        for i in range(2):
            self.add(f"A-{i}", "A", [*PYTHON, "users", "chat", "--port=0", "--metrics-port=0",
                                     f"--data-dir={data / f'a{i}'}", *COMMON])
        for i in range(2):
            self.add(f"B-{i}", "B", [*PYTHON, "files", "--port=0", "--metrics-port=0",
                                     f"--data-dir={files_dir}", *COMMON])
        self.proxy = PartitionProxy(upstream_port=0, listen_port=0)  # both known in start()

    def add(self, name: str, kind: str, command: list[str]) -> None:
        ready_path = None if kind == "redis" else self.out / "ready" / f"{name}.json"
        if ready_path is not None:
            command = [*command, f"--ready-file={ready_path}"]
        self.nodes[name] = Node(name, kind, command, 0, None, self.out / "logs" / f"{name}.log",
                                ready_path)

    async def start(self, infra: anyio.abc.TaskGroup) -> None:
        """Start in dependency order, each kind ready before the next. The proxy runs in the
        caller's task group ``infra``, started once A-0's port is known."""
        assert self.proxy is not None
        async with httpx.AsyncClient(timeout=2.0) as client:
            await self._start_redis(client)
            store = f"--store=redis://127.0.0.1:{self.nodes['redis'].port}/0"
            batch = self.of_kind("A") + self.of_kind("B")
            for node in batch:
                if node.kind == "A":
                    node.command.insert(-1, store)
                await node.start()
            for node in batch:
                await node.wait_ready(client)
            a0, a1 = self.nodes["A-0"].port, self.nodes["A-1"].port
            self.proxy.upstream_port = a0
            await infra.start(self.proxy.serve)
            b = ",".join(f"127.0.0.1:{n.port}" for n in self.of_kind("B"))
            a_via_proxy = f"127.0.0.1:{self.proxy.port},127.0.0.1:{a1}"
            a_direct = f"127.0.0.1:{a0},127.0.0.1:{a1}"
            for i, a in enumerate((a_via_proxy, a_direct)):
                self.add(f"P-{i}", "P", [*PYTHON, "gateway", "--port=0", f"--users-addr={a}",
                                         f"--chat-addr={a}", f"--files-addr={b}", *COMMON,
                                         *self.gateway_flags])
            for node in self.gateways:
                await node.start()
            for node in self.gateways:
                await node.wait_ready(client)

    async def _start_redis(self, client: httpx.AsyncClient) -> None:
        node = self.nodes["redis"]
        base = list(node.command)
        for attempt in range(REDIS_ATTEMPTS):
            node.port = random.randint(*REDIS_PORTS)
            node.command = [*base, "--port", str(node.port)]
            await node.start()
            try:
                await node.wait_ready(client)
                return
            except TopologyError:
                if node.proc is None or node.proc.returncode is None \
                        or attempt + 1 == REDIS_ATTEMPTS:
                    raise
                log.info("redis could not listen on %d: another port", node.port)

    async def restart(self, node: Node) -> None:
        """Start ``node`` again on its port, and wait until it answers."""
        deadline = time.monotonic() + READY_TIMEOUT
        node.restarting = True
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                while True:  # a port in TIME_WAIT or a slow start: retry until the deadline
                    await node.start()
                    try:
                        await node.wait_ready(client, max(1.0, deadline - time.monotonic()))
                        return
                    except TopologyError:
                        await node.kill()
                        if time.monotonic() > deadline:
                            raise
                        log.warning("%s did not come back; starting it again", node.name)
                        await anyio.sleep(0.5)
        finally:
            node.restarting = False

    async def stop(self) -> None:
        """Gateways first (their clients get 1001), then A and B, then Redis. Never raises."""
        with anyio.CancelScope(shield=True):
            for kinds in (("P",), ("A", "B"), ("redis",)):
                for node in self.nodes.values():
                    if node.kind in kinds:
                        with suppress(Exception):
                            await node.stop()


def kill_all() -> None:
    """SIGCONT then SIGKILL every process group the harness started and has not reaped
    (idempotent; for Ctrl-C and crashes, after which no process may outlive the harness)."""
    for proc in STARTED:
        if proc.returncode is None:
            for signum in (signal.SIGCONT, signal.SIGKILL):
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signum)
