"""The session store Protocol and its factory.

The store never sees a bearer token, only its SHA-256: whoever reads the database (a backup, a
leak) learns no token that works. Expiry is decided by the caller passing the oldest creation
time still valid, so every backend applies the same TTL rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chatsys.runtime.settings import Settings
from chatsys.runtime.storage import by_backend


@dataclass(frozen=True)
class SessionRecord:
    id: str
    user: str
    room: str
    created_ms: int


class SessionStore(Protocol):
    async def create(self, sessions: Sequence[tuple[SessionRecord, bytes]]) -> None:
        """Store new sessions, each under the hash of its token, in one commit (a join storm's
        sessions arrive batched)."""

    async def lookup(self, token_hash: bytes, not_before_ms: int) -> SessionRecord | None:
        """The session for this token hash, or None if unknown or created before the cut-off."""

    async def end(self, session_ids: Sequence[str]) -> None:
        """Forget sessions, in one commit; ending an unknown one is not an error."""

    async def purge(self, before_ms: int) -> int:
        """Delete sessions created before ``before_ms`` (expired); returns how many."""

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


async def open_session_store(settings: Settings) -> SessionStore:
    url = settings.store_url

    async def sqlite() -> SessionStore:
        from chatsys.users.sqlite_store import SqliteSessionStore

        return await SqliteSessionStore.open(url)

    async def redis() -> SessionStore:
        from chatsys.users.redis_store import RedisSessionStore

        return await RedisSessionStore.open(url)

    return await by_backend(url, sqlite=sqlite, redis=redis)
