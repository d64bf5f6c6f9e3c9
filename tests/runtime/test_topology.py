"""P, A and B started together: in this process through each ``serve(..., task_status)``, and
as OS processes through :mod:`chatsys.runtime.topology`; both on ports the servers chose. A
member killed, frozen or restarted by the topology comes back on the same ports; one that dies
on its own is reported."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from chatsys.runtime.topology import Member, Topology, TopologyError
from tests.chat_client import ChatClient, wait_status
from tests.gateway_support import SERVERS
from tests.runtime.in_process import round_trip

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("server", SERVERS)
def test_p_a_and_b_serve_in_process_on_ports_they_report(tmp_path: Path, server: str) -> None:
    result = subprocess.run([sys.executable, "-m", "tests.runtime.in_process", server,
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round trip" in result.stdout


@pytest.mark.anyio
async def test_topology_starts_replicas_on_redis_and_stops_them_in_order(tmp_path: Path) -> None:
    topology = Topology(tmp_path, gateways=2, a_replicas=2, b_replicas=1)
    try:
        with anyio.fail_after(90):
            await topology.start()
        assert [m.name for m in topology.members] == ["redis", "A-0", "A-1", "B-0", "P-0", "P-1"]
        assert len({m.port for m in topology.members}) == 6
        assert {m.name for m in topology.targets()} == {"A-0", "A-1", "B-0", "P-0", "P-1"}
        for url in topology.gateway_urls:
            await round_trip(int(url.rsplit(":", 1)[1]))
        assert topology.exited() == {}
    finally:
        codes = await topology.stop()
    assert codes == dict.fromkeys(["P-0", "P-1", "A-0", "A-1", "B-0", "redis"], 0)


@pytest.mark.anyio
async def test_a_child_that_exits_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    topology = Topology(tmp_path, a_flags=["--store", "mysql://nowhere"])
    try:
        with pytest.raises(TopologyError, match=r"A-0 exited with 2 while starting(.|\n)*mysql"):
            await topology.start()
    finally:
        await topology.stop()


@pytest.mark.anyio
async def test_members_restart_on_their_ports_and_only_other_exits_are_reported(
        tmp_path: Path) -> None:
    topology = Topology(tmp_path, redis=True)
    try:
        with anyio.fail_after(150):
            await topology.start()
            first = {m.name: m.ports for m in topology.members}
            [gateway] = topology.gateway_urls
            a, redis = topology.member("A-0"), topology.member("redis")
            reported: list[int] = []

            async def report(member: Member) -> None:
                reported.append((await topology.exited_on_its_own(member)).pid)

            async with anyio.create_task_group() as tg:
                tg.start_soon(report, a)
                for member in (a, redis):  # ours: never reported
                    before = member.pid
                    await topology.kill(member)
                    await topology.restart(member)
                    assert member.pid != before
                assert {m.name: m.ports for m in topology.members} == first
                await wait_status(f"{gateway}/readyz", 200, 30)  # it finds A and Redis again
                a.signal(signal.SIGSTOP)
                a.signal(signal.SIGCONT)
                await wait_status(f"{gateway}/readyz", 200, 30)
                assert not reported
                dying = a.pid
                a.signal(signal.SIGKILL)  # not through the topology: an exit of its own
            assert reported == [dying]
            await topology.restart(a)
            a.signal(signal.SIGSTOP)  # frozen when the topology stops: still stops cleanly
    finally:
        codes = await topology.stop()
    assert codes == dict.fromkeys(["P-0", "A-0", "B-0", "redis"], 0)


async def _connections(url: str) -> float:
    """``chatsys_ws_connections`` of the gateway whose own ``/metrics`` is ``url``."""
    from chatsys.lab.samples import parse_exposition

    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    return sum(v for name, _labels, v in parse_exposition(text)
               if name == "chatsys_ws_connections")


@pytest.mark.anyio
async def test_gateways_added_and_removed_on_one_port_hand_their_clients_over(
        tmp_path: Path) -> None:
    topology = Topology(tmp_path, gateways=1, shared_port=True)
    try:
        with anyio.fail_after(120):
            await topology.start()
            [url] = topology.gateway_urls
            port = int(url.rsplit(":", 1)[1])
            alice = await ChatClient.connect(port, "alice", "lobby")  # on P-0, the only one
            added = await topology.add_gateway()
            assert added.name == "P-1" and added.port == port
            assert topology.gateway_urls == [url]
            assert added.metrics_url != topology.member("P-0").metrics_url
            # The kernel spreads connections over both listeners; connect until one is P-1's.
            bob, on_added = None, 0.0
            while not on_added:
                bob = await ChatClient.connect(port, "bob", "lobby")
                on_added = await _connections(added.metrics_url)
                if not on_added:
                    await bob.close()
            assert bob is not None
            acked = []
            for i in range(3):
                ref = await alice.send_text(f"before {i}")
                acked.append((await alice.ack_or_error(ref))["id"])
            resume_from = (await bob.messages(3))[-1]["id"]

            removed, code = await topology.remove_gateway()
            assert removed is added and code == 0
            await bob.ws.wait_closed()
            assert bob.ws.close_code == 1001  # going away: reconnect with since
            for i in range(3):  # sent while bob is away
                ref = await alice.send_text(f"away {i}")
                acked.append((await alice.ack_or_error(ref))["id"])
            bob = await ChatClient.connect(port, "bob", "lobby", since=resume_from)
            assert [m["id"] for m in bob.welcome["history"]] == acked[3:]  # no gap, no repeat
            ref = await alice.send_text("after")
            live = await bob.wait_for(lambda f: f["type"] == "message")
            assert live["id"] == (await alice.ack_or_error(ref))["id"]
            assert [m.name for m in topology.members_of("P")] == ["P-0"]
            assert topology.exited() == {}  # a removed gateway is no death
            with pytest.raises(TopologyError, match="last gateway"):
                await topology.remove_gateway()
            await bob.close()
            await alice.close()
    finally:
        codes = await topology.stop()
    assert codes == dict.fromkeys(["P-0", "A-0", "B-0"], 0)
