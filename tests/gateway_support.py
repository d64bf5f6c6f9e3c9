"""Starting the gateway (alone, beside A and B, or as ``chatsys all``) for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chatsys.runtime import ready
from tests import grpc_services
from tests.support import Proc, http_ok, running_reported

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
    a = f"127.0.0.1:{users_chat_port}"
    args = ["gateway", "--host=127.0.0.1", f"--port={port or 0}", f"--server={server}",
            f"--users-addr={a}", f"--chat-addr={a}", f"--files-addr=127.0.0.1:{files_port}",
            "--drain-timeout=0.2", "--grpc-timeout=2", *extra]
    with running_reported(args, log_dir=log_dir, ready_check=_serving) as (proc, ports):
        yield Gateway(proc, ports.port)


def _serving(ports: ready.Ports) -> bool:
    """A gateway listens before its pools reach A and B."""
    return http_ok(f"http://127.0.0.1:{ports.port}/readyz")


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
    args = ["all", f"--port={port or 0}", f"--data-dir={data_dir}", f"--server={server}",
            "--drain-timeout=0.2", *extra]
    # `all` writes its ready file once the gateway's /readyz has answered 200.
    with running_reported(args, log_dir=log_dir, timeout=60) as (proc, ports):
        yield Gateway(proc, ports.port)
