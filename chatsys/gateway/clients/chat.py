"""ChatService as the gateway calls it, on upb messages (:mod:`chatsys.chat.wire`): the path
every chat message takes.

Appends and presence go through :class:`~chatsys.gateway.clients.coalescing.Coalescer`
queues, which send them to A in ``AppendBatch`` and ``PublishPresenceBatch`` calls; an A from before
those gets one ``Append`` or ``PublishPresence`` per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from chatsys.chat import wire
from chatsys.errors import ChatError, from_grpc, from_status
from chatsys.gateway import metrics as m
from chatsys.gateway.clients.caller import (
    WIRE_ERRORS,
    Caller,
    Retry,
    batch_or_one_each,
    did_no_work,
    outcome_of,
    seconds_left,
)
from chatsys.gateway.clients.coalescing import Coalescer
from chatsys.stubs.chatsys.chat.v1 import chat_pb2 as pb
from chatsys.stubs.chatsys.files.v1 import FileInfo
from chatsys.stubs.chatsys.users.v1.users_pb2 import Session

Outcome = pb.Stored | ChatError
Published = None | ChatError


class ChatClient:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.appends = Coalescer("AppendBatch", self._append_batch, timeout=caller.timeout,
                                 sizes=m.BATCH_SIZE.labels("AppendBatch"))
        self.presences = Coalescer("PublishPresenceBatch", self._publish_presence_batch,
                                   timeout=caller.timeout,
                                   sizes=m.BATCH_SIZE.labels("PublishPresenceBatch"))
        self.coalescers = (self.appends, self.presences)

    async def append_text(self, session: Session, text: str) -> pb.Stored:
        return await self.appends.call(pb.AppendRequest(
            room=session.room, user=session.user, session=session.id, text=text))

    async def append_file(self, session: Session, info: FileInfo) -> pb.Stored:
        ref = pb.FileRef(id=info.id, name=info.name, size=info.size,
                         content_type=info.content_type)
        return await self.appends.call(pb.AppendRequest(
            room=session.room, user=session.user, session=session.id, file=ref))

    async def _append_batch(self, requests: list[pb.AppendRequest]) -> list[Outcome]:
        """One AppendBatch call (see :mod:`~chatsys.gateway.clients.coalescing`): retried, or
        failed, as a whole like one Append; each message's own failure maps like a failed
        call's status."""
        return await self.caller.call("AppendBatch", lambda ch, t: _append_batch_on(
            ch, requests, t), retry=Retry.UNSENT)

    async def history(self, room: str, since: str, limit: int) -> list[pb.Message]:
        request = pb.HistoryRequest(room=room, since=since, limit=limit)
        reply = await self.caller.call("History", lambda ch, t: wire.HISTORY.call(
            ch, request, seconds=t), retry=Retry.BROKEN)
        return list(reply.messages)

    async def publish_presence(self, session: Session, joined: bool) -> None:
        event = pb.Presence.EVENT_JOIN if joined else pb.Presence.EVENT_LEAVE
        await self.presences.call(pb.Presence(
            room=session.room, user=session.user, session=session.id, event=event))

    async def _publish_presence_batch(self, presences: list[pb.Presence]) -> list[Published]:
        return await self.caller.call("PublishPresenceBatch", lambda ch, t: _presence_batch_on(
            ch, presences, t), retry=Retry.UNSENT)

    async def subscribe(self, room: str, since: str) -> AsyncIterator[pb.RoomEvent]:
        """The room's event stream from any replica; failures surface as :class:`ChatError`.

        Only opening it has a deadline (its first event, ``subscribed``, must come in time);
        then it lives as long as the room has members. If its replica dies the stream ends
        with an error and the endpoint is ejected, so the caller's re-subscription (with
        ``since``) lands on another replica.
        """
        request = pb.SubscribeRequest(room=room, since=since)
        first, stream, endpoint = await self.caller.open_stream(
            "Subscribe", lambda ch, _t: wire.SUBSCRIBE.stream(ch, request), long_lived=True)
        async with aclosing(stream):  # type: ignore[type-var]
            try:
                yield first
                async for event in stream:
                    yield event
            except WIRE_ERRORS as exc:
                raise self.caller.stream_failed(endpoint, exc) from None


async def _append_batch_on(channel: Channel, requests: list[pb.AppendRequest],
                           seconds: float) -> list[Outcome]:
    """``AppendBatch``, or one ``Append`` per message on an A from before it (UNIMPLEMENTED:
    during a rolling upgrade that reaches the gateways first)."""
    try:
        reply = await wire.APPEND_BATCH.call(channel, pb.AppendBatchRequest(appends=requests),
                                             seconds=seconds)
    except GRPCError as exc:
        if exc.status is not Status.UNIMPLEMENTED:
            raise
        return await _append_one_by_one(channel, requests, seconds)
    return [outcome_of(outcome, "stored") for outcome in reply.outcomes]


async def _presence_batch_on(channel: Channel, presences: list[pb.Presence],
                             seconds: float) -> list[Published]:
    """``PublishPresenceBatch``, or one ``PublishPresence`` each on an A from before it (a
    repeat is harmless: a presence is not stored, repeating one only repeats a frame)."""

    async def batch(left: float) -> list[Published]:
        reply = await wire.PUBLISH_PRESENCE_BATCH.call(
            channel, pb.PublishPresenceBatchRequest(presences=presences), seconds=left)
        return [None if failure.status == Status.OK.value
                else from_status(failure.status, failure.detail) for failure in reply.failures]

    async def one(presence: pb.Presence, left: float) -> None:
        await wire.PUBLISH_PRESENCE.call(channel, pb.PublishPresenceRequest(presence=presence),
                                         seconds=left)

    return await batch_or_one_each(batch, one, presences, seconds)


async def _append_one_by_one(channel: Channel, requests: list[pb.AppendRequest],
                             seconds: float) -> list[Outcome]:
    """Nothing may be retried once a message may be stored, so after the first message every
    failure stays with its message (and those after it) instead of failing the call (hence not
    :func:`~chatsys.gateway.clients.caller.batch_or_one_each`, which raises a lost connection
    for the whole batch to be retried)."""
    deadline = anyio.current_time() + seconds
    outcomes: list[Outcome] = []
    for index, request in enumerate(requests):
        try:
            appended = await wire.APPEND.call(channel, request, seconds=seconds_left(deadline))
        except WIRE_ERRORS as exc:
            if index == 0 and did_no_work(exc):
                raise
            if isinstance(exc, GRPCError):  # this message's own failure
                outcomes.append(from_grpc(exc))
                continue
            outcomes.extend(from_grpc(exc) for _ in requests[index:])  # the connection's
            break
        outcomes.append(pb.Stored(id=appended.message.id, ts=appended.message.ts))
    return outcomes
