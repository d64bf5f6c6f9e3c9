"""chatsys.runtime.limits: every process raises its soft open-files limit to the hard one, and a
gateway whose limit cannot hold ``--max-connections`` answers 503 at what it can hold, not EMFILE.
Real processes, started under a lowered limit."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from chatsys.runtime import ready
from chatsys.runtime.limits import RESERVED_FILES
from tests import grpc_services
from tests.chat_client import ChatClient, refused
from tests.support import PYTHON, http_ok, running_command

pytestmark = pytest.mark.slow

# Sets the open-files limit, then becomes the chatsys process (same pid).
LIMITED = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, "
           "(int(sys.argv[1]), int(sys.argv[2]))); os.execv(sys.argv[3], sys.argv[3:])")


def limited(soft: int, hard: int, *args: str) -> list[str]:
    return [PYTHON, "-c", LIMITED, str(soft), str(hard), PYTHON, "-m", "chatsys", *args]


def open_files(pid: int) -> tuple[int, int]:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_a_process_raises_its_soft_limit_to_the_hard_one(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    reported = tmp_path / "files.ready.json"
    command = limited(256, hard, "files", "--host=127.0.0.1", "--port=0",
                      f"--data-dir={tmp_path}", f"--ready-file={reported}")
    with running_command(command, lambda _: ready.read(reported) is not None, name="files",
                         log_dir=tmp_path) as proc:
        assert open_files(proc.pid) == (hard, hard)
        assert proc.stop() == 0


@pytest.mark.anyio
async def test_a_gateway_short_of_open_files_refuses_with_503_at_what_it_can_hold(
        tmp_path: Path) -> None:
    limit = RESERVED_FILES + 12  # room for 12 sockets; the default --max-connections is 20,000
    data = tmp_path / "data"
    data.mkdir()
    reported = tmp_path / "gateway.ready.json"
    with grpc_services.start(["users", "chat"], data) as a, \
            grpc_services.start(["files"], data) as b:

        def serving(_: object) -> bool:
            ports = ready.read(reported)
            return ports is not None and http_ok(f"http://127.0.0.1:{ports.port}/readyz")

        command = limited(limit, limit, "gateway", "--host=127.0.0.1", "--port=0",
                          f"--users-addr=127.0.0.1:{a.port}", f"--chat-addr=127.0.0.1:{a.port}",
                          f"--files-addr=127.0.0.1:{b.port}", "--drain-timeout=0",
                          f"--ready-file={reported}")
        with running_command(command, serving, name="gateway", log_dir=tmp_path) as proc:
            ports = ready.read(reported)
            assert ports is not None
            clients = [await ChatClient.connect(ports.port, f"c{i}", "fds") for i in range(12)]
            status, body = await refused(ports.port, "user=late&room=fds")
            assert status == 503 and body["error"]["code"] == "unavailable", body
            assert "more than the open-files limit leaves for sockets (12)" in proc.output()
            # The ones it holds still chat.
            ref = await clients[0].send_text("still here")
            assert (await clients[0].ack_or_error(ref, 10))["type"] == "ack"
            [message] = await clients[-1].messages(1)
            assert message["text"] == "still here"
            for client in clients:
                await client.close()
