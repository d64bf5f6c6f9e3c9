"""Sessions in Redis (scaled-out module A): any replica authenticates any session.

Keys: ``chatsys:token:<sha256 hex>`` is a hash with the session (one HGETALL per lookup, the
hot path), ``chatsys:session:<id>`` points back at the token hash so a session can be ended by
id, and the sorted set ``chatsys:sessions`` (score: creation time) lets expired sessions be
purged without scanning. Multi-key changes run as Lua scripts, so no replica ever sees half a
session, whichever replica made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatsys.runtime.storage import connect_redis
from chatsys.users.store import SessionRecord

if TYPE_CHECKING:
    from redis.asyncio import Redis

TOKEN_KEY = "chatsys:token:"
SESSION_KEY = "chatsys:session:"
INDEX_KEY = "chatsys:sessions"
PURGE_BATCH = 500

# KEYS: index; ARGV: session id, token prefix, session prefix
END = """
local token = redis.call('GET', ARGV[3] .. ARGV[1])
if token then redis.call('DEL', ARGV[2] .. token) end
redis.call('DEL', ARGV[3] .. ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
# KEYS: index; ARGV: cut-off (exclusive), batch size, token prefix, session prefix
PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  local token = redis.call('GET', ARGV[4] .. id)
  if token then redis.call('DEL', ARGV[3] .. token) end
  redis.call('DEL', ARGV[4] .. id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"""


class RedisSessionStore:
    def __init__(self, client: Redis) -> None:
        self._redis = client
        self._end = client.register_script(END)
        self._purge = client.register_script(PURGE)

    @classmethod
    async def open(cls, url: str) -> RedisSessionStore:
        client = await connect_redis(url)
        return cls(client)

    async def create(self, sessions: Sequence[tuple[SessionRecord, bytes]]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for record, token_hash in sessions:
                token = token_hash.hex()
                pipe.hset(TOKEN_KEY + token, mapping={  # type: ignore[arg-type]
                    "id": record.id, "user": record.user, "room": record.room,
                    "created_ms": record.created_ms})
                pipe.set(SESSION_KEY + record.id, token)
                pipe.zadd(INDEX_KEY, {record.id: record.created_ms})
            await pipe.execute()

    async def lookup(self, token_hash: bytes, not_before_ms: int) -> SessionRecord | None:
        fields = await self._redis.hgetall(TOKEN_KEY + token_hash.hex())  # type: ignore[misc]
        if not fields:
            return None
        record = SessionRecord(fields["id"], fields["user"], fields["room"],
                               int(fields["created_ms"]))
        return record if record.created_ms >= not_before_ms else None

    async def end(self, session_ids: Sequence[str]) -> None:
        # One round trip: the script per session, pipelined (each stays atomic on its own).
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                await self._end(keys=[INDEX_KEY], args=[session_id, TOKEN_KEY, SESSION_KEY],
                                client=pipe)
            await pipe.execute()

    async def purge(self, before_ms: int) -> int:
        total = 0
        while True:
            n = int(await self._purge(keys=[INDEX_KEY],
                                      args=[before_ms, PURGE_BATCH, TOKEN_KEY, SESSION_KEY]))
            total += n
            if n < PURGE_BATCH:
                return total

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
