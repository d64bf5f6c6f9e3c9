"""How room events reach the subscribers held by this process: the broker behind ChatService.

The servicer and the batcher only talk to a :class:`Broker` (as Centrifugo's engines do), and
:func:`open_broker` picks it from ``--store`` like every store factory:

- :class:`LocalBroker` (SQLite, one replica): the batcher hands each committed message
  straight to the in-process :class:`~chatsys.chat.hub.Hub`, in id order, before acking.
- :class:`~chatsys.chat.redis_broker.RedisBroker` (N replicas): a message may be appended by
  any replica, so every replica feeds its hub from the room streams in Redis instead, and
  presence travels through Redis too.
"""

from __future__ import annotations

from typing import Protocol

import anyio
from prometheus_client import Counter

from chatsys.chat.hub import Hub, Subscription
from chatsys.runtime.settings import Settings
from chatsys.runtime.storage import by_backend
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message, Presence, RoomEvent

DELIVERIES = Counter("chatsys_hub_deliveries_total", "Events queued for subscribers by the hub.")


class Broker(Protocol):
    hub: Hub

    async def subscribe(self, room: str) -> Subscription:
        """Register for ``room``'s events; every message stored after this returns arrives."""

    def unsubscribe(self, sub: Subscription) -> None: ...

    def published(self, message: Message) -> None:
        """``message`` is durable (called in id order, before its ack)."""

    async def publish_presence(self, presence: Presence) -> None: ...

    async def run(self, stop: anyio.Event) -> None:
        """Background work until ``stop``; then end every subscription (server stop)."""


class LocalBroker:
    """One process holds every subscription: publishing is a hub call."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def subscribe(self, room: str) -> Subscription:
        return self.hub.subscribe(room)

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)

    def published(self, message: Message) -> None:
        DELIVERIES.inc(self.hub.publish(message.room, RoomEvent(message=message)))

    async def publish_presence(self, presence: Presence) -> None:
        DELIVERIES.inc(self.hub.publish(presence.room, RoomEvent(presence=presence)))

    async def run(self, stop: anyio.Event) -> None:
        await stop.wait()
        self.hub.close()


async def open_broker(settings: Settings, hub: Hub) -> Broker:
    url = settings.store_url

    async def sqlite() -> Broker:
        return LocalBroker(hub)

    async def redis() -> Broker:
        from chatsys.chat.redis_broker import RedisBroker

        return await RedisBroker.open(url, hub)

    return await by_backend(url, sqlite=sqlite, redis=redis)
