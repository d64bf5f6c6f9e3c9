"""Starting modules A and B as real processes for tests, on free ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import Proc, free_port, port_open, running


@dataclass
class Service:
    proc: Proc
    port: int
    metrics_port: int
    data_dir: Path


@contextlib.contextmanager
def start(verbs: list[str], data_dir: Path, *extra: str) -> Iterator[Service]:
    port, metrics_port = free_port(), free_port()
    # --flag=value: support.running names the log file after the arguments not starting with "-".
    args = [*verbs, "--host=127.0.0.1", f"--port={port}", f"--metrics-port={metrics_port}",
            f"--data-dir={data_dir}", "--drain-timeout=0.1", *extra]
    with running(args, ready=lambda: port_open(port) and port_open(metrics_port),
                 log_dir=data_dir.parent) as proc:
        yield Service(proc, port, metrics_port, data_dir)
