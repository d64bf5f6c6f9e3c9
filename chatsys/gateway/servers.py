"""The one small server interface the gateway runs behind: serve until stopped.

``serve(app, stop)`` binds, reports the bound port through ``task_status`` once it accepts
connections, and returns after ``stop`` is set and the server has closed. Both servers run
in this process's event loop, so the gateway's own task group owns everything they call.

``--port 0``: Hypercorn serves a socket we bind, so its port is read from the socket. Granian
2.8 binds its listener in Rust and neither accepts a socket nor exposes the bound port (its
``Server`` has no such parameter or attribute; on Linux the worker builds the listener from a
spec, and the port survives only inside Rust). The narrowest workaround that needs no private
name: the kernel's own record. The listener is the one LISTEN socket in ``/proc/net/tcp{,6}``
whose inode is among this process's descriptors and that was not there before Granian started
(:func:`listening_port_since`). It is Linux-only; elsewhere Granian needs a fixed ``--port``.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from chatsys.runtime.settings import Settings
from chatsys.runtime.sockets import shared_port_socket

log = logging.getLogger("chatsys.gateway.server")
LISTEN_TIMEOUT = 15.0
BACKLOG = 4096


class HttpServer(Protocol):
    async def serve(self, app: Any, stop: anyio.Event, *,
                    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None: ...


async def _wait_listening(host: str, port: int) -> None:
    """Granian has no 'listening' callback: poll the port."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    with anyio.fail_after(LISTEN_TIMEOUT):
        while True:
            try:
                stream = await anyio.connect_tcp(target, port)
            except OSError:
                await anyio.sleep(0.02)
                continue
            await stream.aclose()
            return


def own_socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _listening_ports(inodes: set[str]) -> dict[str, int]:
    """inode -> port of each LISTEN TCP socket among ``inodes``."""
    found = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                found[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


async def listening_port_since(before: set[str]) -> int:
    """The port of the first listener this process opened that is not in ``before``."""
    with anyio.fail_after(LISTEN_TIMEOUT):
        while True:
            new = _listening_ports(own_socket_inodes() - before)
            if new:
                return min(new.values())
            await anyio.sleep(0.02)


class GranianServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def serve(self, app: Any, stop: anyio.Event, *,
                    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings
        from granian.server.embed import Server

        # Granian's only idle limit on a keep-alive connection is its header read timeout: the
        # wait for the next request's headers starts when the previous response ends.
        http1 = HTTP1Settings(header_read_timeout=round(self.settings.keep_alive_timeout * 1000))
        server = Server(app, address=self.settings.host, port=self.settings.port,
                        interface=Interfaces.ASGINL, log_enabled=False, backlog=BACKLOG,
                        websockets=True, http1_settings=http1)
        port = self.settings.port
        before = own_socket_inodes() if port == 0 else set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            if port == 0:
                port = await listening_port_since(before)
            else:
                await _wait_listening(self.settings.host, port)
            task_status.started(port)
            await stop.wait()
            server.stop()


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    sock = shared_port_socket(host, port)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class HypercornServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def serve(self, app: Any, stop: anyio.Event, *,
                    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config

        from chatsys.compat.hypercorn import serve_on

        config = Config()
        config.graceful_timeout = 1.0
        config.keep_alive_timeout = self.settings.keep_alive_timeout
        config.websocket_max_message_size = 1 << 30  # the gateway enforces its own limit
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        # Bound here rather than by Hypercorn so that --workers can share the port.
        sock = _listening_socket(self.settings.host, self.settings.port, BACKLOG)
        port = int(sock.getsockname()[1])
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_on, app, config, sock, stop.wait)
            await _wait_listening(self.settings.host, port)
            task_status.started(port)


def make_server(settings: Settings) -> HttpServer:
    return GranianServer(settings) if settings.server == "granian" else HypercornServer(settings)
