"""The gateway's client pool: address parsing, DNS targets, round robin and ejection."""

from __future__ import annotations

import pytest

from chatsys.runtime.grpc_clients import ChannelPool, Target, parse_target
from chatsys.runtime.settings import SettingsError

pytestmark = pytest.mark.anyio


def test_parse_lists_and_dns() -> None:
    assert parse_target("a:1,b:2") == Target(endpoints=(("a", 1), ("b", 2)))
    assert parse_target(" [::1]:50051 ") == Target(endpoints=(("::1", 50051),))
    assert parse_target("dns:///chat.default.svc:50051") == Target(
        dns_name="chat.default.svc", dns_port=50051)


@pytest.mark.parametrize("bad", ["", "nohost", "a:", ":1", "a:99999", "a:x", "dns://x:1",
                                 "dns:///x"])
def test_bad_addresses_are_rejected(bad: str) -> None:
    with pytest.raises(SettingsError):
        parse_target(bad)


async def test_round_robin_and_ejection() -> None:
    pool = ChannelPool(parse_target("127.0.0.1:1001,127.0.0.1:1002,127.0.0.1:1003"))
    picks = [pool.pick()._port for _ in range(6)]  # type: ignore[attr-defined]
    assert picks == [1001, 1002, 1003, 1001, 1002, 1003]
    bad = pool.pick()
    pool.failed(bad)
    later = {pool.pick()._port for _ in range(6)}  # type: ignore[attr-defined]
    assert bad._port not in later and len(later) == 2  # type: ignore[attr-defined]
    pool.close()


async def test_dns_target_resolves_every_address() -> None:
    pool = ChannelPool(parse_target("dns:///localhost:50051"))
    with pytest.raises(ConnectionRefusedError):
        pool.pick()  # nothing resolved yet
    await pool.refresh()
    assert pool.pick()._port == 50051  # type: ignore[attr-defined]
    pool.close()
