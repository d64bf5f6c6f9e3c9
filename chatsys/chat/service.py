"""ChatService: thin gRPC handlers over the batcher (writes), the store (reads) and the broker.

Subscribe registers with the broker before it reads any history, then skips live messages it
already replayed: between the history read and the first live event nothing can slip through
the gap, and nothing is sent twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpclib.const import Handler

from chatsys import validation
from chatsys.chat import wire
from chatsys.chat.batcher import Batcher
from chatsys.chat.broker import Broker
from chatsys.chat.hub import HubClosed, Overflowed
from chatsys.chat.store import MAX_HISTORY, MessageStore, order_key
from chatsys.errors import BadRequest, ChatError, RateLimited, TooLarge, Unavailable
from chatsys.runtime import rpc
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import (
    AppendBatchRequest,
    AppendBatchResponse,
    AppendOutcome,
    AppendRequest,
    AppendResponse,
    FileRef,
    HistoryRequest,
    HistoryResponse,
    Message,
    Presence,
    PublishPresenceBatchRequest,
    PublishPresenceBatchResponse,
    PublishPresenceRequest,
    PublishPresenceResponse,
    RoomEvent,
    Subscribed,
    SubscribeRequest,
)

MAX_SESSION_CHARS = 128
MAX_FILE_FIELD_CHARS = 512
MAX_BATCH_APPENDS = 1000
MAX_BATCH_PRESENCES = 1000


def _fill(outcome: AppendOutcome, result: Message | ChatError) -> None:
    if isinstance(result, ChatError):  # as to_grpc() would carry it, in the batch's reply
        outcome.failure.status = result.grpc_status.value
        outcome.failure.detail = result.message
    else:
        outcome.stored.id = result.id
        outcome.stored.ts = result.ts


def _check_presence(presence: Presence) -> None:
    validation.room_name(presence.room)
    validation.user_name(presence.user)
    if presence.event not in (Presence.EVENT_JOIN, Presence.EVENT_LEAVE):
        raise BadRequest("presence event must be join or leave")
    if len(presence.session) > MAX_SESSION_CHARS:
        raise BadRequest("session is too long")


class ChatService:
    """grpclib serves what :meth:`__mapping__` returns: the methods of
    :mod:`chatsys.chat.wire`, on upb messages."""

    def __init__(self, store: MessageStore, broker: Broker, batcher: Batcher, *,
                 max_text_chars: int, history_limit: int) -> None:
        self.store = store
        self.broker = broker
        self.batcher = batcher
        self.max_text_chars = max_text_chars
        self.history_limit = history_limit

    def __mapping__(self) -> dict[str, Handler]:
        return {
            wire.APPEND.route: wire.APPEND.handler(self.append),
            wire.APPEND_BATCH.route: wire.APPEND_BATCH.handler(self.append_batch),
            wire.HISTORY.route: wire.HISTORY.handler(self.history),
            wire.PUBLISH_PRESENCE.route: wire.PUBLISH_PRESENCE.handler(self.publish_presence),
            wire.PUBLISH_PRESENCE_BATCH.route: wire.PUBLISH_PRESENCE_BATCH.handler(
                self.publish_presence_batch),
            wire.SUBSCRIBE.route: wire.SUBSCRIBE.handler(self.subscribe),
        }

    def _draft(self, request: AppendRequest) -> Message:
        """The message to store for a valid request (id and ts still empty)."""
        room = validation.room_name(request.room)
        user = validation.user_name(request.user)
        if len(request.session) > MAX_SESSION_CHARS:
            raise BadRequest("session is too long")
        body = request.WhichOneof("body")
        if body == "text":
            text = request.text
            if not text:
                raise BadRequest("text must not be empty")
            if len(text) > self.max_text_chars:
                raise TooLarge(f"text is longer than {self.max_text_chars} characters")
            return Message(room=room, user=user, session=request.session, text=text)
        if body == "file":
            ref = request.file
            if not ref.id:
                raise BadRequest("file.id is required")
            if max(len(ref.id), len(ref.name), len(ref.content_type)) > MAX_FILE_FIELD_CHARS:
                raise BadRequest("file reference is too long")
            return Message(room=room, user=user, session=request.session,
                           file=FileRef(id=ref.id, name=ref.name, size=ref.size,
                                        content_type=ref.content_type))
        raise BadRequest("text or file is required")

    @rpc.unary
    async def append(self, message: AppendRequest) -> AppendResponse:
        return AppendResponse(message=await self.batcher.append(self._draft(message)))

    @rpc.unary
    async def append_batch(self, message: AppendBatchRequest) -> AppendBatchResponse:
        if len(message.appends) > MAX_BATCH_APPENDS:
            raise BadRequest(f"at most {MAX_BATCH_APPENDS} appends per batch")
        outcomes: list[Message | ChatError] = []
        drafts: list[Message] = []
        for request in message.appends:
            try:
                drafts.append(self._draft(request))
                outcomes.append(drafts[-1])
            except ChatError as exc:
                outcomes.append(exc)
        stored = iter(await self.batcher.append_many(drafts) if drafts else [])
        reply = AppendBatchResponse()
        for slot in outcomes:
            _fill(reply.outcomes.add(), slot if isinstance(slot, ChatError) else next(stored))
        return reply

    @rpc.unary
    async def history(self, message: HistoryRequest) -> HistoryResponse:
        room = validation.room_name(message.room)
        since = validation.message_id(message.since)
        if since:
            return HistoryResponse(messages=await self.store.after(room, since))
        limit = message.limit if message.limit > 0 else self.history_limit
        return HistoryResponse(messages=await self.store.last(room, min(limit, MAX_HISTORY)))

    @rpc.unary
    async def publish_presence(self, message: PublishPresenceRequest) -> PublishPresenceResponse:
        if not message.HasField("presence"):
            raise BadRequest("presence is required")
        _check_presence(message.presence)
        await self.broker.publish_presence(message.presence)
        return PublishPresenceResponse()

    @rpc.unary
    async def publish_presence_batch(self, message: PublishPresenceBatchRequest,
                                     ) -> PublishPresenceBatchResponse:
        if len(message.presences) > MAX_BATCH_PRESENCES:
            raise BadRequest(f"at most {MAX_BATCH_PRESENCES} presences per batch")
        reply = PublishPresenceBatchResponse()
        for presence in message.presences:
            failure = reply.failures.add()
            try:
                _check_presence(presence)
            except ChatError as exc:
                failure.status = exc.grpc_status.value
                failure.detail = exc.message
                continue
            await self.broker.publish_presence(presence)
        return reply

    @rpc.stream
    async def subscribe(self, message: SubscribeRequest) -> AsyncIterator[RoomEvent]:
        room = validation.room_name(message.room)
        since = validation.message_id(message.since)
        sub = await self.broker.subscribe(room)
        try:
            yield RoomEvent(subscribed=Subscribed(room=room))
            last = order_key(since) if since else (-1, -1)
            if since:
                for replayed in await self.store.after(room, since):
                    yield RoomEvent(message=replayed)
                    last = order_key(replayed.id)
            while True:
                try:
                    event = await sub.get()
                except Overflowed:
                    raise RateLimited("subscriber fell behind; subscribe again with since") \
                        from None
                except HubClosed:
                    raise Unavailable("server is shutting down") from None
                if event.WhichOneof("event") == "message" \
                        and order_key(event.message.id) <= last:
                    continue
                yield event
        finally:
            self.broker.unsubscribe(sub)
