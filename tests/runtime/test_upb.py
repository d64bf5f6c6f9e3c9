"""The chat path's methods come from the generated descriptor, and A serves every one of them."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib.const import Cardinality

from chatsys.chat import wire
from chatsys.chat.service import ChatService
from chatsys.runtime.upb import Method
from chatsys.stubs.chatsys.chat.v1 import chat_pb2


def test_methods_match_the_proto() -> None:
    assert wire.APPEND_BATCH.route == "/chatsys.chat.v1.ChatService/AppendBatch"
    assert wire.APPEND_BATCH.request is chat_pb2.AppendBatchRequest
    assert wire.APPEND_BATCH.reply is chat_pb2.AppendBatchResponse
    assert wire.APPEND_BATCH.cardinality is Cardinality.UNARY_UNARY
    assert wire.SUBSCRIBE.reply is chat_pb2.RoomEvent
    assert wire.SUBSCRIBE.cardinality is Cardinality.UNARY_STREAM


def test_a_serves_every_method_of_the_service() -> None:
    unused: Any = None
    mapping = ChatService(unused, unused, unused, max_text_chars=1,
                          history_limit=1).__mapping__()
    assert set(mapping) == {f"/{wire.SERVICE.full_name}/{m.name}" for m in wire.SERVICE.methods}
    for route, handler in mapping.items():
        method = wire.SERVICE.methods_by_name[route.rpartition("/")[2]]
        assert handler.request_type.DESCRIPTOR is method.input_type
        assert handler.reply_type.DESCRIPTOR is method.output_type


def test_client_streaming_is_refused_when_mapped() -> None:
    append = wire.APPEND
    streaming = Method(append.route, append.request, append.reply, Cardinality.STREAM_UNARY)
    with pytest.raises(NotImplementedError):
        streaming.handler(lambda request: request)
