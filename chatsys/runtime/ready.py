"""How a child tells its parent which ports it got: the ``--ready-file PATH`` protocol.

A server started with ``--port 0`` (and ``--metrics-port 0``) binds whatever the kernel gives
it, so no port is ever chosen by one process and bound by another (the old ``free_port()``
race: bind, close, pass the number on, and hope nobody takes it in between). Once it listens,
the child writes ``{"pid": ..., "port": ..., "metrics_port": ...}`` to ``PATH``.

Why a file rather than a line on an inherited pipe: the children's output already goes to a
log file or the terminal, and a file needs no extra descriptor threaded through ``spawn``, no
reader that must keep a pipe drained for the child's whole life, and can be read by a
synchronous test as easily as by the async supervisor. It is written to a temporary name and
renamed, so a reader sees either nothing or the whole JSON document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc

POLL = 0.02


class Ports(NamedTuple):
    """What a server reports once it listens (``metrics_port`` is None for the gateway, whose
    ``/metrics`` is on its HTTP port)."""

    port: int
    metrics_port: int | None = None


class NotReady(RuntimeError):
    """A child exited before writing its ready file."""


def write(path: str | os.PathLike[str], ports: Ports) -> None:
    """Atomically publish this process's bound ports (a no-op when ``path`` is empty)."""
    if not str(path):
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **ports._asdict()}))
    os.replace(tmp, target)


def read(path: Path) -> Ports | None:
    """The published ports, or None while the child has not written them yet."""
    try:
        found: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Ports(found["port"], found.get("metrics_port"))


async def wait(path: Path, proc: anyio.abc.Process,
               describe: Callable[[], str] = str) -> Ports:
    """Wait for ``proc`` to write ``path`` (the caller sets the deadline); :class:`NotReady`,
    with ``describe()`` (e.g. the child's log tail), if it exits first."""
    while True:
        found = read(path)
        if found is not None:
            return found
        if proc.returncode is not None:
            raise NotReady(f"exited with {proc.returncode} while starting\n{describe()}")
        await anyio.sleep(POLL)
