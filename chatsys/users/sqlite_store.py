"""Sessions in SQLite (the embedded default of module A)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from chatsys.runtime.sqlite import SqliteDB, parse_sqlite_url, transaction
from chatsys.users.store import SessionRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    user TEXT NOT NULL,
    room TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_created ON sessions (created_ms);
"""


class SqliteSessionStore:
    def __init__(self, db: SqliteDB) -> None:
        self._db = db

    @classmethod
    async def open(cls, url: str) -> SqliteSessionStore:
        # A session lost to a power cut only means a reconnect: no fsync per join.
        db = SqliteDB(parse_sqlite_url(url), SCHEMA, synchronous="NORMAL")
        await db.open()
        return cls(db)

    async def create(self, sessions: Sequence[tuple[SessionRecord, bytes]]) -> None:
        rows = [(r.id, token_hash, r.user, r.room, r.created_ms) for r, token_hash in sessions]

        def insert(conn: sqlite3.Connection) -> None:
            # The cursor is closed here, not kept alive with the result: a later statement
            # reusing the cached one while it lives fails with "API misuse".
            conn.executemany("INSERT INTO sessions (id, token_hash, user, room, created_ms) "
                             "VALUES (?, ?, ?, ?, ?)", rows).close()

        await self._db.run(transaction, insert)

    async def lookup(self, token_hash: bytes, not_before_ms: int) -> SessionRecord | None:
        def select(conn: sqlite3.Connection) -> SessionRecord | None:
            row = conn.execute(
                "SELECT id, user, room, created_ms FROM sessions "
                "WHERE token_hash = ? AND created_ms >= ?", (token_hash, not_before_ms),
            ).fetchone()
            return SessionRecord(*row) if row else None

        return await self._db.run(select)

    async def end(self, session_ids: Sequence[str]) -> None:
        rows = [(session_id,) for session_id in session_ids]

        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM sessions WHERE id = ?", rows).close()

        await self._db.run(transaction, delete)

    async def purge(self, before_ms: int) -> int:
        return await self._db.run(lambda conn: conn.execute(
            "DELETE FROM sessions WHERE created_ms < ?", (before_ms,)).rowcount)

    async def ping(self) -> None:
        await self._db.ping()

    async def aclose(self) -> None:
        await self._db.aclose()
