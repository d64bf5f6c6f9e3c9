"""grpc-ecosystem client metrics: every call ends counted once, with trailers or without."""

from __future__ import annotations

from grpclib.const import Status
from prometheus_client import REGISTRY

from chatsys.runtime import metrics

APPEND = "/chatsys.chat.v1.ChatService/Append"
LABELS = {"grpc_type": "unary", "grpc_service": "chatsys.chat.v1.ChatService",
          "grpc_method": "Append"}


def _handled(code: str) -> float:
    value = REGISTRY.get_sample_value("grpc_client_handled_total", {**LABELS, "grpc_code": code})
    return value or 0.0


def _observed() -> float:
    return REGISTRY.get_sample_value("grpc_client_handling_seconds_count", LABELS) or 0.0


def test_calls_with_and_without_trailers_are_counted_once() -> None:
    ok, unavailable, observed = _handled("OK"), _handled("UNAVAILABLE"), _observed()
    metrics.CLIENT.begin(APPEND)
    metrics.CLIENT.end(Status.OK)
    metrics.CLIENT.begin(APPEND)
    metrics.record_client_failure(ConnectionResetError())  # connection lost: no trailers
    metrics.record_client_failure(ConnectionResetError())  # nothing running: not counted
    assert _handled("OK") == ok + 1
    assert _handled("UNAVAILABLE") == unavailable + 1
    assert _observed() == observed + 2
