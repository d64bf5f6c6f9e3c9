"""Starting the gateway (alone, beside A and B, or as ``chatsys all``) for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import grpc_services
from tests.support import Proc, free_port, http_ok, running

SERVERS = ["granian", "hypercorn"]


@dataclass
class Gateway:
    proc: Proc
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def start_gateway(users_chat_port: int, files_port: int, log_dir: Path, server: str = "granian",
                  *extra: str, port: int | None = None) -> Iterator[Gateway]:
    port = port or free_port()
    a = f"127.0.0.1:{users_chat_port}"
    args = ["gateway", "--host=127.0.0.1", f"--port={port}", f"--server={server}",
            f"--users-addr={a}", f"--chat-addr={a}", f"--files-addr=127.0.0.1:{files_port}",
            "--drain-timeout=0.2", "--grpc-timeout=2", *extra]
    with running(args, ready=lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
                 log_dir=log_dir) as proc:
        yield Gateway(proc, port)


@dataclass
class System:
    a: grpc_services.Service
    b: grpc_services.Service
    gateway: Gateway

    @property
    def port(self) -> int:
        return self.gateway.port


@contextlib.contextmanager
def start_system(tmp: Path, server: str = "granian", *gateway_flags: str,
                 a_flags: tuple[str, ...] = ()) -> Iterator[System]:
    """A, B and P as three processes, so a test can stop one of them."""
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    with grpc_services.start(["users", "chat"], data, *a_flags) as a, \
            grpc_services.start(["files"], data) as b, \
            start_gateway(a.port, b.port, tmp, server, *gateway_flags) as gw:
        yield System(a, b, gw)


@contextlib.contextmanager
def start_all(data_dir: Path, log_dir: Path, server: str = "granian",
              port: int | None = None, *extra: str) -> Iterator[Gateway]:
    """``python -m chatsys all`` exactly as a user runs it."""
    port = port or free_port()
    args = ["all", f"--port={port}", f"--data-dir={data_dir}", f"--server={server}",
            "--drain-timeout=0.2", *extra]
    with running(args, ready=lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
                 log_dir=log_dir, timeout=60) as proc:
        yield Gateway(proc, port)
