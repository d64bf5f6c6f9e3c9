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
import pytest

from chatsys.runtime.topology import Member, Topology, TopologyError
from tests.chat_client import wait_status
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
