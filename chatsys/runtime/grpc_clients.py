"""The gateway's gRPC client pool: every address of a service, balanced per call.

gRPC over HTTP/2 multiplexes every call on one connection, so a client behind a ClusterIP
Service sticks to one pod. The pool instead keeps one grpclib channel per endpoint — from a
comma list, or from every address that ``dns:///name:port`` resolves to (re-resolved
periodically) — and hands out channels round robin, skipping endpoints that just failed.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from grpclib.client import Channel

from chatsys.runtime import metrics
from chatsys.runtime.settings import SettingsError

log = logging.getLogger("chatsys.grpc.pool")
EJECT_SECONDS = 2.0


@dataclass(frozen=True)
class Target:
    """A parsed ``--*-addr`` value."""

    endpoints: tuple[tuple[str, int], ...] = ()
    dns_name: str = ""
    dns_port: int = 0

    @property
    def is_dns(self) -> bool:
        return bool(self.dns_name)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{text!r} is not host:port")
    return host, int(port)


def parse_target(text: str) -> Target:
    """``host:port[,host:port...]`` or ``dns:///name:port``."""
    text = text.strip()
    if text.startswith("dns:///"):
        name, port = _host_port(text.removeprefix("dns:///"))
        return Target(dns_name=name, dns_port=port)
    if text.startswith("dns:"):
        raise SettingsError(f"{text!r}: use dns:///name:port")
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise SettingsError("an address is required")
    return Target(endpoints=tuple(_host_port(p) for p in parts))


async def resolve(name: str, port: int) -> list[tuple[str, int]]:
    infos = await anyio.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({(str(info[4][0]), port) for info in infos})


class ChannelPool:
    """Channels to every endpoint of one service, picked round robin."""

    def __init__(self, target: Target, *, resolve_every: float = 10.0) -> None:
        self.target = target
        self.resolve_every = resolve_every
        self._channels: dict[tuple[str, int], Channel] = {}
        self._order: list[tuple[str, int]] = []
        self._cycle = itertools.cycle(())
        self._ejected_until: dict[tuple[str, int], float] = {}
        if not target.is_dns:
            self._set_endpoints(target.endpoints)

    def _set_endpoints(self, endpoints: Sequence[tuple[str, int]]) -> None:
        wanted = list(dict.fromkeys(endpoints))
        for gone in set(self._channels) - set(wanted):
            self._channels.pop(gone).close()
        for endpoint in wanted:
            if endpoint not in self._channels:
                channel = Channel(*endpoint)
                metrics.instrument_channel(channel)
                self._channels[endpoint] = channel
        if wanted != self._order:
            log.info("endpoints: %s", ", ".join(f"{h}:{p}" for h, p in wanted) or "none")
        self._order = wanted
        self._cycle = itertools.cycle(wanted)

    async def refresh(self) -> None:
        if not self.target.is_dns:
            return
        try:
            endpoints = await resolve(self.target.dns_name, self.target.dns_port)
        except OSError as exc:
            log.warning("cannot resolve %s: %s", self.target.dns_name, exc)
            return
        if endpoints:
            self._set_endpoints(endpoints)

    async def run(self) -> None:
        """Keep DNS targets fresh; runs in the gateway's task group until cancelled."""
        while True:
            await self.refresh()
            await anyio.sleep(self.resolve_every)

    def pick(self) -> Channel:
        """The next healthy endpoint's channel (any endpoint if all look unhealthy)."""
        if not self._order:
            raise ConnectionRefusedError("no endpoints resolved yet")
        now = time.monotonic()
        for _ in range(len(self._order)):
            endpoint = next(self._cycle)
            if self._ejected_until.get(endpoint, 0.0) <= now:
                return self._channels[endpoint]
        return self._channels[next(self._cycle)]

    def failed(self, channel: Channel) -> None:
        """A call on ``channel`` could not reach its endpoint: skip it for a while."""
        for endpoint, ch in self._channels.items():
            if ch is channel:
                self._ejected_until[endpoint] = time.monotonic() + EJECT_SECONDS

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._order = []
