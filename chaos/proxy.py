"""A TCP proxy between one gateway and one A replica, which the harness can partition.

``cut()`` drops every live connection with a reset (as a lost link or a crashed middlebox
does) and black-holes new ones: they are accepted but nothing is forwarded, so the gateway's
HTTP/2 keepalive, not a quick "connection refused", has to notice. ``heal()`` closes the
black-holed connections and forwards again.
"""

from __future__ import annotations

import socket
import struct
from contextlib import suppress

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

CHUNK = 65536


def _reset(stream: anyio.abc.SocketStream) -> None:
    """Make the next close send RST rather than FIN: the peer sees a dead link, not a goodbye."""
    with suppress(OSError):
        raw = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class PartitionProxy:
    def __init__(self, upstream_port: int, listen_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = listen_port
        self._healed = anyio.Event()
        self._healed.set()
        self._live: set[anyio.CancelScope] = set()
        self.connections = 0

    @property
    def is_cut(self) -> bool:
        return not self._healed.is_set()

    def cut(self) -> None:
        self._healed = anyio.Event()
        for scope in list(self._live):
            scope.cancel()

    def heal(self) -> None:
        self._healed.set()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                    ) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self.port = listener.extra(SocketAttribute.local_port)  # listen_port 0: the one we got
        async with listener:
            task_status.started()
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with client:
            if self.is_cut:
                await self._healed.wait()  # a black hole until the partition heals
                _reset(client)
                return
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
            except OSError:
                _reset(client)  # the replica is down: the gateway sees the refusal through us
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    self._live.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._pump, client, upstream, tg.cancel_scope)
                            tg.start_soon(self._pump, upstream, client, tg.cancel_scope)
                    finally:
                        self._live.discard(scope)
                if scope.cancelled_caught:  # cut: both sides see a reset
                    _reset(client)
                    _reset(upstream)

    @staticmethod
    async def _pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream,
                    both: anyio.CancelScope) -> None:
        """Copy one direction; when either side ends, end the pair (no half-open leftovers)."""
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            both.cancel()
