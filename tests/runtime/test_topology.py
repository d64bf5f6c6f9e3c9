"""P, A and B started together: in this process through each ``serve(..., task_status)``, and
as OS processes through :mod:`chatsys.runtime.topology`; both on ports the servers chose."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from chatsys import services
from chatsys.gateway import main as gateway
from chatsys.runtime.settings import Settings
from chatsys.runtime.topology import Topology, TopologyError
from tests.chat_client import ChatClient
from tests.gateway_support import SERVERS

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def _round_trip(port: int) -> None:
    alice = await ChatClient.connect(port, "alice", "lobby")
    bob = await ChatClient.connect(port, "bob", "lobby")
    ref = await alice.send_text("hello")
    ack = await alice.ack_or_error(ref)
    assert ack["type"] == "ack"
    for member in (alice, bob):
        got = await member.wait_for(lambda f: f["type"] == "message")
        assert (got["id"], got["text"]) == (ack["id"], "hello")
        await member.ws.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_p_a_and_b_serve_in_process_on_ports_they_report(tmp_path: Path,
                                                                server: str) -> None:
    common = Settings(host="127.0.0.1", port=0, metrics_port=0, data_dir=tmp_path,
                      drain_timeout=0, shutdown_grace=2)
    stop = anyio.Event()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            a = await tg.start(services.serve, common.replace(verbs=("users", "chat")), stop)
            b = await tg.start(services.serve, common.replace(verbs=("files",)), stop)
            assert 0 not in (a.port, a.metrics_port, b.port, b.metrics_port)
            p = await tg.start(gateway.serve, common.replace(
                verbs=("gateway",), server=server, users_addr=f"127.0.0.1:{a.port}",
                chat_addr=f"127.0.0.1:{a.port}", files_addr=f"127.0.0.1:{b.port}"), stop)
            await _round_trip(p.port)
            stop.set()


async def test_topology_starts_replicas_on_redis_and_stops_them_in_order(tmp_path: Path) -> None:
    topology = Topology(tmp_path, gateways=2, a_replicas=2, b_replicas=1)
    try:
        with anyio.fail_after(90):
            await topology.start()
        assert [m.name for m in topology.members] == ["redis", "A-0", "A-1", "B-0", "P-0", "P-1"]
        assert len({m.port for m in topology.members}) == 6
        assert {m.name for m in topology.targets()} == {"A-0", "A-1", "B-0", "P-0", "P-1"}
        for url in topology.gateway_urls:
            await _round_trip(int(url.rsplit(":", 1)[1]))
        assert topology.exited() == {}
    finally:
        codes = await topology.stop()
    assert codes == dict.fromkeys(["P-0", "P-1", "A-0", "A-1", "B-0", "redis"], 0)


async def test_a_child_that_exits_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    topology = Topology(tmp_path, a_flags=["--store", "mysql://nowhere"])
    try:
        with pytest.raises(TopologyError, match=r"A-0 exited with 2 while starting(.|\n)*mysql"):
            await topology.start()
    finally:
        await topology.stop()
