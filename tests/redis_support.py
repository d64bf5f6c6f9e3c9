"""A real ``redis-server`` for tests: its own free loopback port, its own directory, always stopped.

The server runs as the scaled deployment configures it (append-only file, ``appendfsync
always``), so what the tests see about durability is what production gets. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import Proc, free_port, running_command

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass(frozen=True)
class RedisServer:
    port: int
    dir: Path
    proc: Proc

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def redis_ping(port: int) -> bool:
    """A PING answered with PONG (a bound port alone may still be loading the AOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


@contextlib.contextmanager
def start_redis(directory: Path, *, port: int | None = None) -> Iterator[RedisServer]:
    """A redis-server on ``port`` (default: a free one) keeping its AOF in ``directory``; start
    it again on the same directory and port to test a restart."""
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--protected-mode", "yes", "--maxmemory-policy", "noeviction"]
    with running_command(args, ready=lambda: redis_ping(port), log_dir=directory,
                         name="redis-server") as proc:
        yield RedisServer(port, directory, proc)


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
