"""chatsys.compat.hypercorn: what it relies on, checked on the installed Hypercorn.

A failure here means Hypercorn changed an internal name or signature: revisit the compat
module (and its version bound) before upgrading.
"""

from __future__ import annotations

import inspect
import socket
from importlib.metadata import version

import anyio
import httpx
import pytest
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from chatsys.compat import hypercorn as compat

pytestmark = pytest.mark.anyio


def test_the_installed_hypercorn_is_one_the_module_was_written_for() -> None:
    assert version("hypercorn").rsplit(".", 1)[0] in compat.SUPPORTED


def test_the_internal_signatures_are_the_ones_relied_on() -> None:
    serve = inspect.signature(worker_serve).parameters
    assert list(serve)[:2] == ["app", "config"]
    assert {"sockets", "shutdown_trigger"} <= set(serve)
    assert list(inspect.signature(wrap_app).parameters) == ["app", "wsgi_max_body_size", "mode"]
    assert {"secure_sockets", "insecure_sockets", "quic_sockets"} <= set(
        inspect.signature(Sockets).parameters)


async def _hello(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"hello"})  # type: ignore[operator]


async def test_serves_an_app_on_a_socket_bound_by_the_caller() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    stop = anyio.Event()
    config = Config()
    config.graceful_timeout = 1.0
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(compat.serve_on, _hello, config, sock, stop.wait)
            async with httpx.AsyncClient() as client:  # the socket listens: no retry needed
                response = await client.get(f"http://127.0.0.1:{port}/")
            stop.set()
    assert response.text == "hello"
