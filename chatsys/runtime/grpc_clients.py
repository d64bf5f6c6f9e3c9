"""The gateway's gRPC client pool: every address of a service, balanced per call.

gRPC over HTTP/2 multiplexes every call on one connection, so a client behind a ClusterIP
Service sticks to one pod. The pool instead keeps one grpclib channel per endpoint — from a
comma list, or from every address that ``dns:///name:port`` resolves to — and hands out
endpoints round robin, so each added replica takes its share of calls.

Failures: an endpoint whose call could not reach it is *ejected* (skipped) for a few seconds,
but only while another endpoint is healthy: when every candidate is ejected, calls still go to
them (Envoy's and gRPC outlier detection's "panic threshold"), so the pool never refuses a call
because of its own bookkeeping and a lone replica that has just come back is used at once. A
caller may ask for "any endpoint but these" to retry elsewhere, and a DNS target is
re-resolved at once (not only every ``resolve_every`` seconds), so a replica that went away
leaves the rotation as soon as its address leaves the headless Service. A success readmits an
ejected endpoint at once. Every pick and every ejection is counted per endpoint
(``chatsys_grpc_client_calls_total`` / ``chatsys_grpc_client_ejections_total``), which is how
an operator sees balance and failovers.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import anyio
from grpclib.client import Channel
from grpclib.config import Configuration

from chatsys.compat.grpclib import keepalive_configuration
from chatsys.runtime import metrics
from chatsys.runtime.h2_writes import CoalescingChannel
from chatsys.runtime.settings import SettingsError

log = logging.getLogger("chatsys.grpc.pool")
EJECT_SECONDS = 2.0
MIN_RESOLVE_GAP = 0.5  # failure-triggered re-resolution at most this often
Endpoint = tuple[str, int]


class NoEndpoint(Exception):
    """No endpoint is known (DNS not resolved yet) or every one was already tried."""


@dataclass(frozen=True)
class Target:
    """A parsed ``--*-addr`` value."""

    endpoints: tuple[Endpoint, ...] = ()
    dns_name: str = ""
    dns_port: int = 0

    @property
    def is_dns(self) -> bool:
        return bool(self.dns_name)


def _host_port(text: str) -> Endpoint:
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


async def resolve(name: str, port: int) -> list[Endpoint]:
    infos = await anyio.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({(str(info[4][0]), port) for info in infos})


def label(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def keepalive_config(seconds: float) -> Configuration | None:
    """HTTP/2 keepalive for channels that may sit idle, e.g. one holding only room streams.

    A replica that vanishes without a TCP reset (node loss, a frozen process) would otherwise
    hold a subscription stream open forever and answer no call until its deadline. With a ping
    every ``seconds`` — also on idle connections, and with no cap on pings without data, since a
    subscribing gateway sends nothing after its request — an unanswered ping closes the
    connection after ``seconds`` more, its streams fail, and the gateway moves on. grpclib's
    server answers pings without enforcing a minimum interval.
    """
    if seconds <= 0:
        return None
    return keepalive_configuration(seconds)


class ChannelPool:
    """Channels to every endpoint of one service, picked round robin, failing ones skipped."""

    def __init__(self, target: Target, *, service: str = "", resolve_every: float = 10.0,
                 eject_seconds: float = EJECT_SECONDS, keepalive: float = 0.0) -> None:
        self.target = target
        self._config = keepalive_config(keepalive)
        self.service = service or (target.dns_name or "static")
        self.resolve_every = resolve_every
        self.eject_seconds = eject_seconds
        self._channels: dict[Endpoint, Channel] = {}
        # Long-lived streams (room subscriptions) get their own connection per endpoint: h2
        # counts a connection's open streams on every new one, so unary calls sharing a
        # connection with hundreds of subscriptions would pay for each of them.
        self._stream_channels: dict[Endpoint, Channel] = {}
        self._order: list[Endpoint] = []
        # Start the rotation anywhere, so gateways started together do not all send their
        # first calls (and their long-lived room subscriptions) to the same endpoint.
        self._next = random.randrange(1 << 16)
        self._ejected_until: dict[Endpoint, float] = {}
        self._resolve_now = anyio.Event()
        if not target.is_dns:
            self._set_endpoints(target.endpoints)

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._order)

    def _set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        wanted = list(dict.fromkeys(endpoints))
        for gone in set(self._channels) - set(wanted):
            self._channels.pop(gone).close()
            self._stream_channels.pop(gone).close()
            self._ejected_until.pop(gone, None)
        for endpoint in wanted:
            if endpoint not in self._channels:
                self._channels[endpoint] = self._new_channel(endpoint)
                self._stream_channels[endpoint] = self._new_channel(endpoint)
        if wanted != self._order:
            log.info("%s endpoints: %s", self.service,
                     ", ".join(label(e) for e in wanted) or "none")
        self._order = wanted
        metrics.CLIENT_ENDPOINTS.labels(self.service).set(len(wanted))

    def _new_channel(self, endpoint: Endpoint) -> Channel:
        channel = CoalescingChannel(*endpoint, config=self._config)  # connects on first use
        metrics.instrument_channel(channel)
        return channel

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
        """Keep DNS targets fresh (periodically, and soon after a failure) until cancelled."""
        if not self.target.is_dns:
            return
        while True:
            self._resolve_now = anyio.Event()  # before resolving: a failure meanwhile counts
            await self.refresh()
            with anyio.move_on_after(self.resolve_every):
                await self._resolve_now.wait()
            await anyio.sleep(MIN_RESOLVE_GAP)

    def pick(self, avoid: Collection[Endpoint] = (), *,
             long_lived: bool = False) -> tuple[Endpoint, Channel]:
        """The next healthy endpoint not in ``avoid`` (an ejected one if nothing else is left),
        with its channel for calls, or for long-lived streams when ``long_lived``.

        Raises :class:`NoEndpoint` when nothing is resolved or everything was avoided.
        """
        candidates = [e for e in self._order if e not in avoid]
        if not candidates:
            raise NoEndpoint(f"no {'other ' if avoid else ''}endpoint of {self.service}")
        now = time.monotonic()
        healthy = [e for e in candidates if self._ejected_until.get(e, 0.0) <= now]
        pool = healthy or candidates
        endpoint = pool[self._next % len(pool)]
        self._next += 1
        metrics.CLIENT_CALLS.labels(self.service, label(endpoint)).inc()
        channels = self._stream_channels if long_lived else self._channels
        return endpoint, channels[endpoint]

    def failed(self, endpoint: Endpoint) -> None:
        """A call could not reach ``endpoint``: skip it for a while and re-resolve DNS soon."""
        if endpoint not in self._channels:
            return
        now = time.monotonic()
        if self._ejected_until.get(endpoint, 0.0) <= now:
            metrics.CLIENT_EJECTIONS.labels(self.service, label(endpoint)).inc()
            log.warning("%s: ejecting %s for %.1fs", self.service, label(endpoint),
                        self.eject_seconds)
        self._ejected_until[endpoint] = now + self.eject_seconds
        self._resolve_now.set()

    def succeeded(self, endpoint: Endpoint) -> None:
        """A call reached ``endpoint``: it is back in the rotation at once."""
        self._ejected_until.pop(endpoint, None)

    def endpoint_of(self, channel: Channel) -> Endpoint:
        return next(e for e in self._channels
                    if channel is self._channels[e] or channel is self._stream_channels[e])

    def channel(self, endpoint: Endpoint) -> Channel:
        """The channel of a known endpoint, not counted as a call (health checks)."""
        return self._channels[endpoint]

    def close(self) -> None:
        for channel in [*self._channels.values(), *self._stream_channels.values()]:
            channel.close()
        self._channels.clear()
        self._stream_channels.clear()
        self._order = []
