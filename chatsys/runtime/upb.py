"""gRPC on upb messages: grpclib calls and handlers for the generated ``_pb2`` modules.

betterproto2's stubs and servicer bases are bound to betterproto2's message classes, which
encode and decode in pure Python. The chat message path uses the generated ``_pb2`` classes of
Google's ``protobuf`` runtime instead (``tools/genproto.py`` says why). grpclib's own protoc
plugin cannot write their stubs here: it imports a ``_pb2`` module by its proto package,
``chatsys.chat.v1``, which in this project is not the generated package. So a method is taken
from the generated service descriptor (route, message classes and cardinality), and calls and
handlers go to grpclib directly; nothing about a method is written by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpclib.client import Channel, UnaryUnaryMethod
from grpclib.const import Cardinality, Handler
from grpclib.server import Stream

CARDINALITY = {
    (False, False): Cardinality.UNARY_UNARY,
    (False, True): Cardinality.UNARY_STREAM,
    (True, False): Cardinality.STREAM_UNARY,
    (True, True): Cardinality.STREAM_STREAM,
}


@dataclass(frozen=True)
class Method:
    route: str
    request: type[Message]
    reply: type[Message]
    cardinality: Cardinality

    @classmethod
    def of(cls, service: ServiceDescriptor, name: str) -> Method:
        method = service.methods_by_name[name]
        return cls(route=f"/{service.full_name}/{name}",
                   request=GetMessageClass(method.input_type),
                   reply=GetMessageClass(method.output_type),
                   cardinality=CARDINALITY[method.client_streaming, method.server_streaming])

    async def call(self, channel: Channel, request: Message, *, seconds: float) -> Any:
        """A unary call with a deadline ``seconds`` from now (the server sees it too): its
        reply."""
        method = UnaryUnaryMethod(channel, self.route, self.request, self.reply)
        return await method(request, timeout=seconds)

    async def stream(self, channel: Channel, request: Message) -> AsyncIterator[Any]:
        """A server-streaming call with no deadline: its replies as they come."""
        async with channel.request(self.route, self.cardinality, self.request,
                                   self.reply) as stream:
            await stream.send_message(request, end=True)
            async for reply in stream:
                yield reply

    def handler(self, fn: Callable[[Any], Any]) -> Handler:
        """A servicer's ``fn(request)`` as this method's grpclib handler (an entry of the
        servicer's ``__mapping__``): a unary ``fn`` returns the reply, a server-streaming one
        yields the replies."""
        if self.cardinality is Cardinality.UNARY_UNARY:

            async def serve(stream: Stream[Any, Any]) -> None:
                request = await stream.recv_message()
                assert request is not None  # grpclib answers a call without one itself
                await stream.send_message(await fn(request))

        elif self.cardinality is Cardinality.UNARY_STREAM:

            async def serve(stream: Stream[Any, Any]) -> None:
                request = await stream.recv_message()
                assert request is not None
                # aclosing: when the client goes away, the handler's `finally` runs now.
                async with aclosing(fn(request)) as replies:
                    async for reply in replies:
                        await stream.send_message(reply)

        else:
            raise NotImplementedError(f"{self.route}: client streaming is not served here")
        return Handler(serve, self.cardinality, self.request, self.reply)
