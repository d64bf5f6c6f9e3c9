"""One process of a local topology (:mod:`chatsys.runtime.topology`): its command, the ports
it listens on, and the one-look checks that say it serves.

A member keeps the ports of its first start. The first start asks for port 0 (and metrics
port 0) and reads what the child reported; every restart asks for exactly those ports, so
the clients configured with fixed addresses (the gateways' ``--chat-addr``, A's ``--store``)
find it again.

Redis cannot report a port (``--port 0`` turns its TCP listener off): it is offered one, and
is ours only once its ``INFO`` names the pid we started, so a Redis that someone else already
runs on that port is never mistaken for ours.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx

from chatsys.runtime import ready
from chatsys.runtime.children import send_signal
from chatsys.runtime.redis_executable import find_redis_server, missing_message

PYTHON = [sys.executable, "-m", "chatsys"]
REDIS_ATTEMPTS = 20
# Below Linux's default ephemeral range (32768-60999), so a port the kernel hands out to
# someone's outgoing connection or port-0 listener is not offered to Redis.
REDIS_PORTS = (20000, 32000)
# As the scaled deployment runs it: nothing acknowledged is lost when Redis is killed.
REDIS_DURABLE = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
NOT_LISTENING = ready.Ports(0)
GRPC_MODULES = ("A", "B")  # they also listen on a metrics port


class TopologyError(RuntimeError):
    """The local topology could not start (or restart) a process; the message says which
    process and why."""


@dataclass(eq=False)  # one member is one identity, whatever its fields say
class Member:
    """One process of the topology, across its restarts."""

    name: str  # P-0, A-1, B-0, redis
    module: str  # P, A, B, redis
    command: list[str]  # without the port flags: see command_line()
    ports: ready.Ports = NOT_LISTENING  # asked for; once started, what it listens on
    log_path: Path | None = None  # None: output goes to ours
    ready_path: Path | None = None  # None: Redis, which cannot report its port
    host: str = "127.0.0.1"  # where to reach it
    proc: anyio.abc.Process | None = None  # the current process
    # True while an exit is ours (kill, stop, a restart under way): see Topology.exited_on_its_own.
    expected_exit: bool = False
    replaced: anyio.Event | None = field(default=None, repr=False)  # set by the next spawn
    # A gateway sharing its port with others (SO_REUSEPORT): its /metrics is read on a port of
    # its own (--own-metrics-port), since a request to the shared port reaches any of them.
    shares_port: bool = False

    @property
    def port(self) -> int:
        return self.ports.port

    @property
    def metrics_port(self) -> int:
        """Where its ``/metrics`` is (a gateway serves it on its HTTP port, unless it shares
        that port; 0: Redis)."""
        return self.ports.metrics_port or (self.port if self.module == "P" else 0)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where Prometheus reads it ("" for Redis, which has no ``/metrics``)."""
        if self.module != "P":
            return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else ""
        if not self.shares_port:
            return f"http://{self.address}/metrics"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.metrics_port}/metrics"

    def command_line(self) -> list[str]:
        """The command with the ports to ask for (0 until the first start has reported)."""
        flags = ["--port", str(self.port)]
        if self.module in GRPC_MODULES:
            flags += ["--metrics-port", str(self.ports.metrics_port or 0)]
        if self.shares_port:
            flags += ["--own-metrics-port", str(self.ports.metrics_port or 0)]
        if self.ready_path is not None:
            flags += ["--ready-file", str(self.ready_path)]
        return [*self.command, *flags]

    def signal(self, signum: int) -> None:
        """Signal its process group (SIGSTOP, SIGCONT, SIGKILL...) while the process runs."""
        if self.proc is not None:
            send_signal(self.proc, signum, whole_group=True)

    def tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path} ---\n" + "\n".join(text)

    def check_alive(self) -> None:
        """TopologyError (with its log's tail) if the current process has exited."""
        if self.proc is not None and self.proc.returncode is not None:
            raise TopologyError(f"{self.name} exited with {self.proc.returncode} while "
                                f"starting\n{self.tail()}")

    async def serves(self, http: httpx.AsyncClient) -> bool:
        """One look: does the current process serve yet? A and B do once they have reported
        (they write the ready file once both ports listen), a gateway once ``/readyz`` says
        200 (it listens before its pools reach A and B), Redis once it answers as our pid."""
        assert self.proc is not None
        self.check_alive()
        if self.ready_path is None:
            return await redis_pid(self.port) == self.proc.pid
        reported = ready.read(self.ready_path)
        if reported is None:
            return False
        self.ports = reported
        if self.module != "P":
            return True
        try:
            return (await http.get(f"http://{self.address}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


def redis_command(workdir: Path, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """A durable redis-server on loopback keeping its files in ``workdir`` (the port is the
    member's)."""
    redis_server = find_redis_server()
    if redis_server is None:
        raise TopologyError(f"--a-replicas > 1 needs Redis: {missing_message()}")
    return [redis_server, "--bind", "127.0.0.1", "--dir", str(workdir), *REDIS_DURABLE, *extra]


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
