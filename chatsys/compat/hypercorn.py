"""Hypercorn's internal names that chatsys relies on, in one place.

Written against Hypercorn 0.18.0 (needs ``hypercorn>=0.18,<0.19``);
``tests/compat/test_hypercorn.py`` fails if what is relied on here changes.

Why not ``hypercorn.asyncio.serve``, the public entry point: it binds its own sockets from
``Config.bind``, which neither shares a port between ``--workers`` (SO_REUSEPORT) nor tells the
caller which port ``--port 0`` got. ``worker_serve`` takes sockets we bound ourselves, and it
needs the app already wrapped by ``wrap_app`` (which the public ``serve`` does for us).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

SUPPORTED = ("0.18",)


async def serve_on(app: Any, config: Config, sock: socket.socket,
                   shutdown_trigger: Callable[[], Awaitable[Any]]) -> None:
    """Serve the ASGI ``app`` on the already listening ``sock`` until ``shutdown_trigger``
    returns."""
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    await worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=shutdown_trigger)
