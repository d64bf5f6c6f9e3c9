"""The shared gRPC bootstrap binds its own socket: ``--port 0`` listens on the port it reports.

(A real process: grpclib's health messages, which the server registers, cannot share a test
process with grpcio's.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import port_open, running

pytestmark = pytest.mark.slow
LISTENING = re.compile(r"gRPC chatsys\.files\.v1\.FileService listening on 127\.0\.0\.1:(\d+)")


def test_port_zero_listens_on_the_port_it_reports(tmp_path: Path) -> None:
    args = ["files", "--host=127.0.0.1", "--port=0", "--metrics-port=0",
            f"--data-dir={tmp_path / 'data'}", "--drain-timeout=0.1"]
    with running(args, ready=lambda: LISTENING.search(_log(tmp_path)) is not None,
                 log_dir=tmp_path) as proc:
        match = LISTENING.search(proc.output())
        assert match is not None
        port = int(match.group(1))
        assert port > 0 and port_open(port)


def _log(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in directory.glob("*.log"))
