"""``chatsys gateway``: serve the app, and on SIGTERM drain before closing.

Drain order: readiness turns false (load balancers stop sending), ``--drain-timeout`` passes,
every WebSocket is closed with 1001 so clients reconnect elsewhere with ``since``, in-flight
handlers finish, then the HTTP server stops.
"""

from __future__ import annotations

import logging
from functools import partial

import anyio
from anyio.abc import TaskStatus

from chatsys.gateway import ws
from chatsys.gateway.app import create_app
from chatsys.gateway.connection import WS_1001_GOING_AWAY
from chatsys.gateway.servers import make_server
from chatsys.gateway.state import Gateway
from chatsys.gateway.transport import WebSocketTransport
from chatsys.runtime import lifecycle, metrics, ready
from chatsys.runtime.limits import sockets_allowed
from chatsys.runtime.settings import Settings
from chatsys.runtime.supervision import Policy, supervise

log = logging.getLogger("chatsys.gateway")


async def serve(settings: Settings, stop: anyio.Event, *,
                task_status: TaskStatus[ready.Ports] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve until ``stop``, then drain; reports the bound port through ``task_status`` (and
    ``--ready-file``) once it accepts connections, so ``--port 0`` is usable."""
    gateway = Gateway.create(settings)
    metrics.count_asyncio_tasks()
    app = WebSocketTransport(create_app(gateway), ws.routes(gateway))
    server = make_server(settings)
    server_stop = anyio.Event()
    # Gateways sharing one port (SO_REUSEPORT) cannot be told apart through it: a scraper (the
    # lab's autoscaler, a local Prometheus) reads each one's /metrics here.
    own_metrics = (metrics.start_exposition_server(settings.host, settings.own_metrics_port)
                   if settings.own_metrics_port >= 0 else None)
    try:
        async with anyio.create_task_group() as background:
            # Every long-lived task is supervised and restarted; while one is down, /readyz
            # says so (gateway.tasks).
            for pool in gateway.pools:
                if pool.target.is_dns:
                    background.start_soon(partial(
                        supervise, f"resolve {pool.service}", pool.run,
                        policy=Policy.RESTART, board=gateway.tasks))
            await background.start(partial(
                supervise, "fan-out hub", gateway.hub.run, policy=Policy.RESTART,
                board=gateway.tasks, signals_start=True))
            for coalescer in (*gateway.users.coalescers, *gateway.chat.coalescers):
                await background.start(partial(
                    supervise, f"{coalescer.method} lanes", coalescer.run,
                    policy=Policy.RESTART, board=gateway.tasks, signals_start=True))
            async with anyio.create_task_group() as serving:
                port = await serving.start(server.serve, app, server_stop)
                log.info("gateway (%s) listening on http://%s:%d", settings.server,
                         settings.host, port)
                ready.write(settings.ready_file, ready.Ports(port, own_metrics))
                task_status.started(ready.Ports(port, own_metrics))
                await stop.wait()
                await drain(gateway)
                server_stop.set()
            background.cancel_scope.cancel()
    finally:
        gateway.close()
    log.info("gateway stopped")


async def drain(gateway: Gateway) -> None:
    gateway.draining = True
    log.info("draining: readiness false, closing WebSockets in %.1fs",
             gateway.settings.drain_timeout)
    await anyio.sleep(gateway.settings.drain_timeout)
    gateway.hub.close_all(WS_1001_GOING_AWAY, "server going away")
    with anyio.move_on_after(max(1.0, gateway.settings.shutdown_grace / 2)):
        await gateway.wait_idle()
    if gateway.sockets:
        log.warning("%d WebSockets still open after drain", gateway.sockets)


def within_open_files(settings: Settings) -> Settings:
    """``settings`` with ``--max-connections`` no higher than the process's open files allow:
    past that limit accepting fails with EMFILE, so the gateway answers 503 before it."""
    left = sockets_allowed()
    if left is None or settings.max_connections <= left:
        return settings
    log.warning("--max-connections %d is more than the open-files limit leaves for sockets "
                "(%d): the gateway refuses with 503 from %d connections on; raise the limit "
                "(ulimit -Hn, systemd's LimitNOFILE, the container runtime's nofile) for more",
                settings.max_connections, left, max(1, left))
    return settings.replace(max_connections=max(1, left))


def run(settings: Settings) -> None:
    if settings.workers > 1:
        from chatsys.gateway.workers import serve_workers

        lifecycle.run(partial(serve_workers, settings), grace=settings.shutdown_grace * 2)
    else:  # each worker is a gateway of its own, with its own limit
        lifecycle.run(partial(serve, within_open_files(settings)),
                      grace=settings.shutdown_grace)
