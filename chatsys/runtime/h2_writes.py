"""One socket write per loop iteration for a gRPC connection, instead of one per HTTP/2 frame.

grpclib writes to its transport as soon as h2 has bytes: a call's headers, its message, the
reply's headers, message and trailers, each a ``send()`` system call of its own, and A sends
every room event to a gateway as a write of its own. Under load many of these happen in the same
loop iteration (A publishes a whole commit batch at once; a gateway's append lanes and room
streams wake together), so this transport gathers what one iteration writes and sends it with
one call at the end of it: fewer system calls on both ends, and fewer reads and HTTP/2 parses on
the receiving end. Nothing waits longer than the rest of the current iteration.

Both ends use it: the shared gRPC server (``chatsys.runtime.grpc_server``) and every client
channel of the pool (``chatsys.runtime.grpc_clients``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpclib.protocol import H2Protocol

from chatsys.compat.grpclib import ProtocolChannel


class CoalescingTransport:
    """Wraps a transport; ``write`` joins what one loop iteration writes into one write."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        """Whatever was written first goes out first: a GOAWAY, the last trailers."""
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingH2Protocol(H2Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport))  # type: ignore[arg-type]


class CoalescingChannel(ProtocolChannel):
    """A grpclib channel whose connections write through :class:`CoalescingTransport`."""

    protocol = CoalescingH2Protocol
