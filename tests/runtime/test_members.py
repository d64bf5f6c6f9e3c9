"""What a topology member asks for when it starts: port 0 the first time, then the ports it
reported, so a restart comes back where its clients look for it."""

from __future__ import annotations

from pathlib import Path

from chatsys.runtime.members import Member
from chatsys.runtime.ready import Ports


def test_a_member_asks_for_the_ports_it_reported_at_its_first_start() -> None:
    a = Member("A-0", "A", ["chatsys", "users", "chat"], ready_path=Path("A-0.json"))
    assert a.command_line() == ["chatsys", "users", "chat", "--port", "0", "--metrics-port", "0",
                                "--ready-file", "A-0.json"]
    a.ports = Ports(50061, 9161)
    assert a.command_line()[3:7] == ["--port", "50061", "--metrics-port", "9161"]
    assert (a.address, a.metrics_url) == ("127.0.0.1:50061", "http://127.0.0.1:9161/metrics")


def test_a_gateway_serves_metrics_on_its_port_and_redis_has_none() -> None:
    gateway = Member("P-0", "P", ["chatsys", "gateway"], ports=Ports(8080), host="::1")
    assert gateway.command_line() == ["chatsys", "gateway", "--port", "8080"]
    assert (gateway.metrics_port, gateway.metrics_url) == (8080, "http://[::1]:8080/metrics")
    redis = Member("redis", "redis", ["redis-server"], ports=Ports(20001))
    assert redis.command_line() == ["redis-server", "--port", "20001"]
    assert (redis.metrics_port, redis.metrics_url) == (0, "")


def test_a_gateway_sharing_its_port_serves_metrics_on_one_of_its_own() -> None:
    gateway = Member("P-2", "P", ["chatsys", "gateway"], ports=Ports(8080), shares_port=True)
    assert gateway.command_line() == ["chatsys", "gateway", "--port", "8080",
                                      "--own-metrics-port", "0"]
    gateway.ports = Ports(8080, 41000)  # what its ready file reported
    assert gateway.command_line()[-2:] == ["--own-metrics-port", "41000"]
    assert (gateway.address, gateway.metrics_url) == ("127.0.0.1:8080",
                                                      "http://127.0.0.1:41000/metrics")
