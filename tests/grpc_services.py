"""Starting modules A and B as real processes for tests, on the ports they bind themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import Proc, running_reported


@dataclass
class Service:
    proc: Proc
    port: int
    metrics_port: int
    data_dir: Path


@contextlib.contextmanager
def start(verbs: list[str], data_dir: Path, *extra: str) -> Iterator[Service]:
    # --flag=value: support.running names the log file after the arguments not starting with "-".
    args = [*verbs, "--host=127.0.0.1", "--port=0", "--metrics-port=0",
            f"--data-dir={data_dir}", "--drain-timeout=0.1", *extra]
    with running_reported(args, log_dir=data_dir.parent) as (proc, ports):
        assert ports.metrics_port is not None
        yield Service(proc, ports.port, ports.metrics_port, data_dir)
