"""The native driver's upload client: a minimal HTTP/1.1 client with keep-alive connections.

One request at a time per connection, answers with Content-Length or chunked bodies; a pool per
worker keeps idle connections per (host, port, source address) and reuses the newest first. A
connection the server closed while idle is noticed (``connection_lost``) and never reused; one
it closes while a request is on the wire fails that request, as it would with ``requests``.
"""

from __future__ import annotations

import asyncio


class RemoteDisconnected(ConnectionError):
    """The server closed a connection before answering (http.client's name for it)."""


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time; Content-Length or chunked answers."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            answer = parse_response(self.buffer)
            if answer is not None:
                self.waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or RemoteDisconnected(
                "Remote end closed connection without response"))

    async def request(self, parts: list[bytes]) -> tuple[int, bytes, bool]:
        assert self.transport is not None
        self.buffer.clear()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines(parts)
        return await self.waiter


def parse_response(buffer: bytearray) -> tuple[int, bytes, bool] | None:
    """(status, body, keep-alive) once ``buffer`` holds a whole response, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    keep_alive = headers.get(b"connection") != b"close"
    start = end + 4
    if headers.get(b"transfer-encoding") == b"chunked":
        body, at = bytearray(), start
        while True:
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(bytes(buffer[at:eol]).split(b";")[0], 16)
            if len(buffer) < eol + 2 + size + 2:
                return None
            if size == 0:
                return status, bytes(body), keep_alive
            body += buffer[eol + 2:eol + 2 + size]
            at = eol + 2 + size + 2
    length = int(headers.get(b"content-length", b"0"))
    if len(buffer) < start + length:
        return None
    return status, bytes(buffer[start:start + length]), keep_alive


class HttpPool:
    """Idle keep-alive connections per (host, port, source address), newest reused first."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int, str], list[HttpConnection]] = {}

    async def post(self, host: str, port: int, source: str, parts: list[bytes],
                   ) -> tuple[int, bytes]:
        key = (host, port, source)
        idle = self.idle.setdefault(key, [])
        conn = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(
                HttpConnection, host, port, local_addr=(source, 0) if source else None)
        try:
            status, body, keep_alive = await conn.request(parts)
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        if keep_alive and not conn.closed:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        return status, body

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.abort()
        self.idle.clear()
