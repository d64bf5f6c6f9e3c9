"""The gateway's client pool: address parsing, DNS targets, round robin, ejection, metrics."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from prometheus_client import REGISTRY

from chatsys.runtime.grpc_clients import ChannelPool, NoEndpoint, Target, parse_target
from chatsys.runtime.settings import SettingsError

pytestmark = pytest.mark.anyio


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll a condition the pool's background task makes true (no event to wait on)."""
    with anyio.fail_after(seconds):
        while True:
            if check():
                return
            await anyio.sleep(0.01)


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


async def test_round_robin_counts_calls_per_endpoint() -> None:
    pool = ChannelPool(parse_target("127.0.0.1:1001,127.0.0.1:1002,127.0.0.1:1003"),
                       service="rr")
    picks = [pool.pick()[0][1] for _ in range(6)]
    assert sorted(picks[:3]) == [1001, 1002, 1003] and picks[3:] == picks[:3]  # a cycle
    for port in (1001, 1002, 1003):
        assert _metric("chatsys_grpc_client_calls_total", service="rr",
                       endpoint=f"127.0.0.1:{port}") == 2
    assert _metric("chatsys_grpc_client_endpoints", service="rr") == 3
    pool.close()


async def test_ejection_avoid_and_readmission() -> None:
    pool = ChannelPool(parse_target("127.0.0.1:2001,127.0.0.1:2002,127.0.0.1:2003"),
                       service="ej", eject_seconds=60)
    bad, _ = pool.pick()
    pool.failed(bad)
    pool.failed(bad)  # already out: one ejection, not two
    assert _metric("chatsys_grpc_client_ejections_total", service="ej",
                   endpoint=f"127.0.0.1:{bad[1]}") == 1
    later = {pool.pick()[0] for _ in range(6)}
    assert bad not in later and len(later) == 2
    # A retry asks for any endpoint but the ones it tried; when none is left it is told so.
    first, _ = pool.pick()
    second, _ = pool.pick(avoid=[first])
    assert second not in (first, bad)
    assert pool.pick(avoid=[first, second])[0] == bad  # only an ejected one left: still usable
    with pytest.raises(NoEndpoint):
        pool.pick(avoid=pool.endpoints)
    # One success brings an ejected endpoint straight back.
    pool.succeeded(bad)
    assert bad in {pool.pick()[0] for _ in range(3)}
    pool.close()


async def test_a_pool_whose_endpoints_are_all_ejected_still_tries_them() -> None:
    """The panic threshold: ejection only orders the endpoints, it never refuses a call, so a
    lone replica that has just come back is used by the very next call."""
    pool = ChannelPool(parse_target("127.0.0.1:2001,127.0.0.1:2002"), service="panic",
                       eject_seconds=3600)
    for endpoint in pool.endpoints:
        pool.failed(endpoint)
    assert {pool.pick()[0] for _ in range(4)} == set(pool.endpoints)
    alone = ChannelPool(parse_target("127.0.0.1:2003"), service="alone", eject_seconds=3600)
    alone.failed(alone.endpoints[0])
    assert alone.pick()[0] == alone.endpoints[0]
    assert alone.pick(long_lived=True)[0] == alone.endpoints[0]
    pool.close()
    alone.close()


async def test_dns_target_resolves_every_address_and_again_on_failure() -> None:
    pool = ChannelPool(parse_target("dns:///localhost:50051"), service="dns",
                       resolve_every=3600)
    with pytest.raises(NoEndpoint):
        pool.pick()  # nothing resolved yet
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run)
        await _until(lambda: bool(pool.endpoints))
        endpoint, _ = pool.pick()
        assert endpoint[1] == 50051
        # A failure triggers a re-resolution long before the hour is up: the pool drops
        # addresses the name no longer has (here: one we planted by hand).
        pool._set_endpoints([*pool.endpoints, ("192.0.2.1", 50051)])
        pool.failed(("192.0.2.1", 50051))
        await _until(lambda: ("192.0.2.1", 50051) not in pool.endpoints)
        tg.cancel_scope.cancel()
    pool.close()
