"""ChatService: thin gRPC handlers over the batcher (writes), the store (reads) and the broker.

Subscribe registers with the broker before it reads any history, then skips live messages it
already replayed: between the history read and the first live event nothing can slip through
the gap, and nothing is sent twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from chatsys import validation
from chatsys.chat.batcher import Batcher
from chatsys.chat.broker import Broker
from chatsys.chat.hub import HubClosed, Overflowed
from chatsys.chat.store import MAX_HISTORY, MessageStore, order_key
from chatsys.errors import BadRequest, ChatError, TooLarge, to_grpc
from chatsys.runtime import rpc
from chatsys.stubs.chatsys.chat.v1 import (
    AppendBatchRequest,
    AppendBatchResponse,
    AppendFailure,
    AppendOutcome,
    AppendRequest,
    AppendResponse,
    ChatServiceBase,
    FileRef,
    HistoryRequest,
    HistoryResponse,
    Message,
    PresenceEvent,
    PublishPresenceRequest,
    PublishPresenceResponse,
    RoomEvent,
    Stored,
    Subscribed,
    SubscribeRequest,
)

MAX_SESSION_CHARS = 128
MAX_FILE_FIELD_CHARS = 512
MAX_BATCH_APPENDS = 1000


def _outcome(result: Message | ChatError) -> AppendOutcome:
    if isinstance(result, ChatError):
        status = to_grpc(result)
        return AppendOutcome(failure=AppendFailure(status=status.status.value,
                                                   detail=status.message or ""))
    return AppendOutcome(stored=Stored(id=result.id, ts=result.ts))


class ChatService(ChatServiceBase):
    def __init__(self, store: MessageStore, broker: Broker, batcher: Batcher, *,
                 max_text_chars: int, history_limit: int) -> None:
        self.store = store
        self.broker = broker
        self.batcher = batcher
        self.max_text_chars = max_text_chars
        self.history_limit = history_limit

    def _body(self, request: AppendRequest) -> tuple[str | None, FileRef | None]:
        if request.text is not None:
            if not request.text:
                raise BadRequest("text must not be empty")
            if len(request.text) > self.max_text_chars:
                raise TooLarge(f"text is longer than {self.max_text_chars} characters")
            return request.text, None
        if request.file is not None:
            ref = request.file
            if not ref.id:
                raise BadRequest("file.id is required")
            if max(len(ref.id), len(ref.name), len(ref.content_type)) > MAX_FILE_FIELD_CHARS:
                raise BadRequest("file reference is too long")
            return None, FileRef(id=ref.id, name=ref.name, size=ref.size,
                                 content_type=ref.content_type)
        raise BadRequest("text or file is required")

    def _draft(self, request: AppendRequest) -> Message:
        """The message to store for a valid request (id and ts still empty)."""
        room = validation.room_name(request.room)
        user = validation.user_name(request.user)
        if len(request.session) > MAX_SESSION_CHARS:
            raise BadRequest("session is too long")
        text, file = self._body(request)
        draft = Message(room=room, user=user, session=request.session)
        if text is not None:
            draft.text = text
        else:
            draft.file = file
        return draft

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
        return AppendBatchResponse(outcomes=[
            _outcome(slot if isinstance(slot, ChatError) else next(stored)) for slot in outcomes])

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
        presence = message.presence
        if presence is None:
            raise BadRequest("presence is required")
        validation.room_name(presence.room)
        validation.user_name(presence.user)
        if presence.event not in (PresenceEvent.JOIN, PresenceEvent.LEAVE):
            raise BadRequest("presence event must be join or leave")
        if len(presence.session) > MAX_SESSION_CHARS:
            raise BadRequest("session is too long")
        await self.broker.publish_presence(presence)
        return PublishPresenceResponse()

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
                    raise GRPCError(Status.RESOURCE_EXHAUSTED,
                                    "subscriber fell behind; subscribe again with since") from None
                except HubClosed:
                    raise GRPCError(Status.UNAVAILABLE, "server is shutting down") from None
                if event.message is not None and order_key(event.message.id) <= last:
                    continue
                yield event
        finally:
            self.broker.unsubscribe(sub)
