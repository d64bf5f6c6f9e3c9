"""A real ``redis-server`` for tests: its own loopback port, its own directory, always stopped.

The server runs as the scaled deployment configures it (append-only file, ``appendfsync
always``), so what the tests see about durability is what production gets. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from chatsys.runtime.members import (
    REDIS_ATTEMPTS,
    REDIS_PORTS,
    redis_command,
    redis_pid,
)
from chatsys.runtime.redis_executable import find_redis_server, missing_message
from tests.support import Proc, running_command


@dataclass(frozen=True)
class RedisServer:
    port: int
    dir: Path
    proc: Proc

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@contextlib.contextmanager
def start_redis(directory: Path, *, port: int | None = None) -> Iterator[RedisServer]:
    """A redis-server keeping its AOF in ``directory``, on ``port`` or, by default, on one it
    could bind (Redis cannot report a port it chose: it is offered random ones until one is
    free, as :mod:`chatsys.runtime.topology` does); start it again on the same directory and
    port to test a restart."""
    if find_redis_server() is None:
        pytest.fail(missing_message())
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(1 if port else REDIS_ATTEMPTS):
        chosen = port or random.randint(*REDIS_PORTS)
        args = redis_command(directory, ["--port", str(chosen), "--protected-mode", "yes",
                                         "--maxmemory-policy", "noeviction"])
        started = contextlib.ExitStack()
        try:
            proc = started.enter_context(running_command(
                args, ready=lambda proc, chosen=chosen: _ours(chosen, proc),  # type: ignore[misc]
                log_dir=directory, name="redis-server"))
        except RuntimeError as exc:
            if port or "Address already in use" not in str(exc) or attempt + 1 == REDIS_ATTEMPTS:
                raise
            continue
        with started:
            yield RedisServer(chosen, directory, proc)
        return


def _ours(port: int, proc: Proc) -> bool:
    """Serving (its AOF loaded) and the process we started, not another test's."""
    return anyio.run(redis_pid, port) == proc.pid


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests use distinct databases or keys."""
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def flush_db(port: int, db: int) -> None:
    """Empty one database (SELECT + FLUSHDB over a plain socket: no client state to leak)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        s.sendall(f"SELECT {db}\r\nFLUSHDB\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = s.recv(64)
            if not chunk:
                break
            reply += chunk
    if reply != b"+OK\r\n+OK\r\n":
        raise RuntimeError(f"FLUSHDB on db {db} failed: {reply!r}")
