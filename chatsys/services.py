"""Composition root of modules A and B: ``chatsys users|chat|files`` in any combination.

It opens the stores the chosen verbs need, wires the servicers, serves gRPC (with health and
reflection) and Prometheus, and on stop ends live subscriptions, lets in-flight appends commit,
then closes the stores, so the process exits 0 with nothing acknowledged lost.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskStatus

from chatsys.runtime import grpc_server, lifecycle, metrics, ready
from chatsys.runtime.grpc_server import Probe
from chatsys.runtime.settings import Settings
from chatsys.runtime.storage import StoreConfigError, StoreUnavailable, backend_for
from chatsys.runtime.supervision import Policy, TaskBoard, supervise

log = logging.getLogger("chatsys.services")


async def serve(settings: Settings, stop: anyio.Event, *,
                task_status: TaskStatus[ready.Ports] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve until ``stop``; reports the bound gRPC and metrics ports through ``task_status``
    (and ``--ready-file``) once both listen, so ``--port 0 --metrics-port 0`` is usable."""
    services: list[Any] = []
    tasks = TaskBoard()  # health is NOT_SERVING while a supervised task is down
    probes: list[Probe] = [tasks.probe]
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        if "users" in settings.verbs:
            from chatsys.tokens import signer_for
            from chatsys.users.service import UserService
            from chatsys.users.store import open_session_store

            sessions = await open_session_store(settings)
            stack.push_async_callback(sessions.aclose)
            services.append(UserService(sessions, ttl_seconds=settings.session_ttl,
                                        signer=signer_for(settings.auth_secret)))
            probes.append(sessions.ping)
        batcher = None
        if "chat" in settings.verbs:
            from chatsys.chat.batcher import Batcher
            from chatsys.chat.broker import open_broker
            from chatsys.chat.hub import Hub
            from chatsys.chat.service import ChatService
            from chatsys.chat.store import open_message_store

            messages = await open_message_store(settings)
            stack.push_async_callback(messages.aclose)
            # The broker ends every subscription once `stop` is set, so the gRPC server's
            # graceful close is not held up by streams that never end by themselves.
            broker = await open_broker(settings, Hub())
            batcher = Batcher(messages, broker)
            # The batcher returns once closed (after the gRPC server), the broker once `stop`
            # is set; any other end is a failure: restart the batcher (queued appends wait),
            # end the process if the broker goes (its subscriptions went with it).
            tg.start_soon(partial(supervise, "append batcher", batcher.run,
                                  policy=Policy.RESTART, board=tasks,
                                  expected_end=lambda: batcher.closing))
            tg.start_soon(partial(supervise, "room broker", partial(broker.run, stop),
                                  policy=Policy.FATAL, board=tasks, expected_end=stop.is_set))
            services.append(ChatService(messages, broker, batcher,
                                        max_text_chars=settings.max_text_chars,
                                        history_limit=settings.history_limit))
            probes.append(messages.ping)
        if "files" in settings.verbs:
            from chatsys.files.service import FileService
            from chatsys.files.store import open_file_store

            files = await open_file_store(settings)
            stack.push_async_callback(files.aclose)
            services.append(FileService(files, max_file_bytes=settings.max_file_bytes))
            probes.append(files.ping)

        metrics.count_asyncio_tasks()
        metrics_port = metrics.start_exposition_server(settings.host, settings.metrics_port)
        async with anyio.create_task_group() as grpc_tg:
            port = await grpc_tg.start(grpc_server.serve_grpc, settings, services, probes, stop)
            log.info("ready: gRPC port %d, metrics port %d (%s)", port, metrics_port,
                     " ".join(settings.verbs))
            bound = ready.Ports(port, metrics_port)
            ready.write(settings.ready_file, bound)
            task_status.started(bound)
        # The gRPC server is closed: no append can arrive any more; commit what is queued.
        if batcher is not None:
            batcher.close()
    log.info("stopped")


def run(settings: Settings) -> None:
    unreachable: list[StoreUnavailable] = []

    async def main(stop: anyio.Event) -> None:
        try:
            await serve(settings, stop)
        except* StoreUnavailable as group:
            unreachable.extend(e for e in group.exceptions if isinstance(e, StoreUnavailable))

    if {"users", "chat"} & set(settings.verbs):
        try:
            backend_for(settings.store_url)  # refuse an unusable --store before anything starts
        except StoreConfigError as exc:
            log.error("%s", exc)
            raise SystemExit(2) from None
    lifecycle.run(main, grace=settings.shutdown_grace)
    if unreachable:
        log.error("%s", unreachable[0])
        raise SystemExit(1)
