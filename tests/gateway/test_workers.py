"""chatsys.gateway.workers: N workers on one port, also when that port is chosen by the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import grpc_services
from tests.chat_client import ChatClient
from tests.support import http_ok, running_reported

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_workers_on_port_0_report_the_one_port_they_share(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with grpc_services.start(["users", "chat"], data) as a, \
            grpc_services.start(["files"], data) as b, \
            running_reported(["gateway", "--host=127.0.0.1", "--port=0", "--workers=2",
                              f"--users-addr=127.0.0.1:{a.port}",
                              f"--chat-addr=127.0.0.1:{a.port}",
                              f"--files-addr=127.0.0.1:{b.port}", "--drain-timeout=0"],
                             log_dir=tmp_path) as (proc, ports):
        assert ports.port != 0 and http_ok(f"http://127.0.0.1:{ports.port}/readyz")
        client = await ChatClient.connect(ports.port, "alice", "workers")
        await client.ws.close()
        assert proc.stop() == 0
