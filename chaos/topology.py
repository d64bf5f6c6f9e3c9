"""The processes under test, all real, on loopback: Redis (AOF, ``appendfsync always``), two A
replicas on it, two B replicas sharing one directory, two gateways, and the partition proxy.

Gateway 0 reaches A-0 through the proxy and A-1 directly; gateway 1 reaches both directly.
Starting, signalling, killing, restarting (on the ports of the first start, where the gateways
expect them) and stopping the processes is :mod:`chatsys.runtime.topology`'s job; what is
chaos's own is the layout, the proxy wiring, and the policy for a process that dies on its own
(record it: the run is then invalid; and start it again, so the run can go on and report
everything else).

No synchronous "kill everything" fallback is needed: :meth:`Topology.stop` runs in the
runner's ``finally``, shielded from cancellation, and ends with SIGKILL; Ctrl-C and SIGTERM
reach the harness as a cancellation (``python -m chaos`` listens for both), so they take the
same path as an error. Only a SIGKILL of the harness itself escapes it, and no handler could
run then; ``OUT/pids.json`` lists what was started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import anyio.abc

from chaos.proxy import PartitionProxy
from chatsys.runtime.topology import Member, Route, Topology, TopologyError

__all__ = ["System", "TopologyError"]

log = logging.getLogger("chaos.topology")
GRACE = 5.0
COMMON = ("--log-level=info", "--drain-timeout=0.2", "--shutdown-grace=3")
# As the scaled deployment runs it: refuse writes rather than evict when memory is full.
REDIS_FLAGS = ("--protected-mode", "yes", "--maxmemory-policy", "noeviction")


@dataclass
class System:
    """The chaos layout over one :class:`Topology`, and what went wrong on its own."""

    out: Path
    gateway_flags: list[str]
    topology: Topology = field(init=False)
    proxy: PartitionProxy = field(init=False)
    unexpected_exits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topology = Topology(
            self.out, gateways=2, a_replicas=2, b_replicas=2, redis=True,
            redis_flags=REDIS_FLAGS, common_flags=COMMON, gateway_flags=self.gateway_flags,
            grace=GRACE)
        self.proxy = PartitionProxy(upstream_port=0, listen_port=0)  # both known in start()

    @property
    def members(self) -> list[Member]:
        return self.topology.members

    @property
    def gateways(self) -> list[Member]:
        return self.topology.members_of("P")

    def member(self, name: str) -> Member:
        return self.topology.member(name)

    async def start(self, infra: anyio.abc.TaskGroup) -> None:
        """Redis, A and B, then the proxy (in the caller's task group ``infra``) once A-0's
        port is known, then the gateways, each routed as the layout says."""
        await self.topology.start_backends()
        a0, a1 = self.topology.members_of("A")
        self.proxy.upstream_port = a0.port
        await infra.start(self.proxy.serve)
        b = [m.address for m in self.topology.members_of("B")]
        await self.topology.start_gateways([
            Route([f"127.0.0.1:{self.proxy.port}", a1.address], b),
            Route([a0.address, a1.address], b),
        ])

    async def keep_running(self, member: Member) -> None:
        """Record every exit the harness did not cause, and start the process again."""
        while True:
            proc = await self.topology.exited_on_its_own(member)
            note = f"{member.name} (pid {proc.pid}) exited on its own with {proc.returncode}"
            log.error(note)
            self.unexpected_exits.append(note)
            try:
                await self.topology.restart(member)
            except TopologyError as exc:
                self.unexpected_exits.append(f"{member.name} could not be restarted: {exc}")
                return

    async def stop(self) -> None:
        """Gateways first (their clients get 1001), then A and B, then Redis. Never raises."""
        await self.topology.stop()
