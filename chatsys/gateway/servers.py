"""The one small server interface the gateway runs behind: serve until stopped.

``serve(app, stop)`` binds, reports readiness through ``task_status`` once the port accepts
connections, and returns after ``stop`` is set and the server has closed. Both servers run
in this process's event loop, so the gateway's own task group owns everything they call.
"""

from __future__ import annotations

import logging
import socket
from functools import partial
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from chatsys.runtime.settings import Settings

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


class GranianServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def serve(self, app: Any, stop: anyio.Event, *,
                    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        server = Server(app, address=self.settings.host, port=self.settings.port,
                        interface=Interfaces.ASGINL, log_enabled=False, backlog=BACKLOG,
                        websockets=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            await _wait_listening(self.settings.host, self.settings.port)
            task_status.started(self.settings.port)
            await stop.wait()
            server.stop()


def _reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket that sibling workers can bind too (the kernel balances them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class HypercornServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def serve(self, app: Any, stop: anyio.Event, *,
                    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.asyncio.run import worker_serve
        from hypercorn.config import Config, Sockets
        from hypercorn.utils import wrap_app

        config = Config()
        config.graceful_timeout = 1.0
        config.websocket_max_message_size = 1 << 30  # the gateway enforces its own limit
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        # Bound here rather than by Hypercorn so that --workers can share the port.
        sock = _reuse_port_socket(self.settings.host, self.settings.port, BACKLOG)
        sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
        wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(worker_serve, wrapped, config, sockets=sockets,
                                  shutdown_trigger=stop.wait))
            await _wait_listening(self.settings.host, self.settings.port)
            task_status.started(self.settings.port)


def make_server(settings: Settings) -> HttpServer:
    return GranianServer(settings) if settings.server == "granian" else HypercornServer(settings)
