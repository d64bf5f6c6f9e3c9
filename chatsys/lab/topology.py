"""A local topology for a lab run: N gateways, M replicas of A, K of B (and Redis when M > 1).

Every process is its own OS process on free loopback ports, in its own session (a terminal's
Ctrl-C reaches only the lab, which stops them in order: gateways, then A and B, then Redis),
with its output in ``DIR/logs/NAME.log``. Their pids are written to ``DIR/pids.json`` as they
start, so whoever started the lab can clean up even if the lab itself is killed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx

from chatsys.runtime.children import free_port, port_open, redis_pong, spawn, terminate

log = logging.getLogger("chatsys.lab")
READY_TIMEOUT = 60.0
GRACE = 10.0
REDIS_SERVER = shutil.which("redis-server")


class TopologyError(RuntimeError):
    """The local topology could not start; the message says which process and why."""


@dataclass
class Member:
    """One process of the topology."""

    name: str  # P-0, A-1, B-0, redis
    module: str  # P, A, B, redis
    command: list[str]
    port: int
    metrics_url: str = ""
    log_path: Path = Path()
    proc: anyio.abc.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tail(self, lines: int = 8) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Topology:
    """The processes of one local run, started by :meth:`start` and stopped by :meth:`stop`."""

    out: Path
    gateways: int = 1
    a_replicas: int = 1
    b_replicas: int = 1
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
        """Start everything and wait until every gateway's ``/readyz`` answers 200."""
        if min(self.gateways, self.a_replicas, self.b_replicas) < 1:
            raise TopologyError("--gateways, --a-replicas and --b-replicas must be at least 1")
        data = self.out / "data"
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        python = [sys.executable, "-m", "chatsys"]
        common = ["--host", "127.0.0.1", "--log-level", "info", "--drain-timeout", "0",
                  "--shutdown-grace", "5"]
        store: list[str] = []
        if self.a_replicas > 1:
            store = ["--store", await self._start_redis()]
        for i in range(self.a_replicas):
            port, metrics = free_port(), free_port()
            await self._spawn(Member(f"A-{i}", "A", [
                *python, "users", "chat", "--port", str(port), "--metrics-port", str(metrics),
                "--data-dir", str(data), *store, *common], port,
                f"http://127.0.0.1:{metrics}/metrics"))
        for i in range(self.b_replicas):
            port, metrics = free_port(), free_port()
            await self._spawn(Member(f"B-{i}", "B", [
                *python, "files", "--port", str(port), "--metrics-port", str(metrics),
                "--data-dir", str(data), *common], port, f"http://127.0.0.1:{metrics}/metrics"))
        await self._wait_ready([m for m in self.members if m.module in ("A", "B")])
        a_list = ",".join(m.address for m in self.members if m.module == "A")
        b_list = ",".join(m.address for m in self.members if m.module == "B")
        for i in range(self.gateways):
            port = free_port()
            await self._spawn(Member(f"P-{i}", "P", [
                *python, "gateway", "--port", str(port), "--users-addr", a_list,
                "--chat-addr", a_list, "--files-addr", b_list, *common], port,
                f"http://127.0.0.1:{port}/metrics"))
        await self._wait_ready([m for m in self.members if m.module == "P"], "/readyz")

    async def _start_redis(self) -> str:
        if REDIS_SERVER is None:
            raise TopologyError("--a-replicas > 1 needs Redis, and redis-server is not installed")
        port = free_port()
        workdir = self.out / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        member = Member("redis", "redis", [
            REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)], port)
        await self._spawn(member)
        with anyio.fail_after(READY_TIMEOUT):
            while not await redis_pong(port):
                self._check_alive(member)
                await anyio.sleep(0.1)
        return f"redis://127.0.0.1:{port}/0"

    async def _spawn(self, member: Member) -> None:
        member.log_path = self.out / "logs" / f"{member.name}.log"
        member.proc = await spawn(member.command, log_path=member.log_path,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.members.append(member)
        (self.out / "pids.json").write_text(json.dumps(
            {m.name: m.proc.pid for m in self.members if m.proc}))
        log.info("started %s (pid %d): %s", member.name, member.proc.pid, member.address)

    def _check_alive(self, member: Member) -> None:
        if member.proc is not None and member.proc.returncode is not None:
            hint = ""
            if member.module == "A" and self.a_replicas > 1:
                hint = (" — more than one replica of A shares its state through Redis "
                        "(--store redis://...); use --a-replicas 1 (SQLite) until A runs "
                        "on Redis")
            raise TopologyError(f"{member.name} exited with {member.proc.returncode} while "
                                f"starting{hint}\n--- {member.log_path} ---\n{member.tail()}")

    async def _wait_ready(self, members: list[Member], path: str = "") -> None:
        """Poll each member until it answers (``path`` on its port, else its metrics)."""
        async with httpx.AsyncClient(timeout=2.0) as client:
            try:
                with anyio.fail_after(READY_TIMEOUT):
                    for member in members:
                        url = f"http://{member.address}{path}" if path else member.metrics_url
                        while True:
                            self._check_alive(member)
                            with suppress(httpx.HTTPError):
                                if (await client.get(url)).status_code == 200 and (
                                        path or await port_open(member.port)):
                                    break
                            await anyio.sleep(0.1)
            except TimeoutError:
                raise TopologyError(f"not ready within {READY_TIMEOUT:.0f}s: "
                                    + ", ".join(m.name for m in members)) from None

    def exited(self) -> dict[str, int]:
        """Members that have already exited (before being asked to), with their codes."""
        return {m.name: m.proc.returncode for m in self.members
                if m.proc is not None and m.proc.returncode is not None}

    async def stop(self) -> dict[str, int]:
        """Stop gateways, then A and B, then Redis; returns each exit code. Never raises."""
        codes: dict[str, int] = {}
        with anyio.CancelScope(shield=True):
            for modules in (("P",), ("A", "B"), ("redis",)):
                for member in self.members:
                    if member.module in modules and member.proc is not None:
                        codes[member.name] = await terminate(member.name, member.proc, GRACE,
                                                             whole_group=True)
        return codes
