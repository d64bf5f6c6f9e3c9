"""Room history in SQLite (the embedded default of module A).

A message id is the AUTOINCREMENT row id, zero-padded to 16 digits, so ids compare as strings in
the same order as numbers and never repeat, even after the newest rows were deleted.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from chatsys.chat.store import order_key, stored_form
from chatsys.runtime.sqlite import SqliteDB, parse_sqlite_url, transaction
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import FileRef, Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    user TEXT NOT NULL,
    session TEXT NOT NULL,
    ts INTEGER NOT NULL,
    text TEXT,
    file_id TEXT,
    file_name TEXT,
    file_size INTEGER,
    file_content_type TEXT
);
CREATE INDEX IF NOT EXISTS messages_room_seq ON messages (room, seq);
"""
COLUMNS = "seq, room, user, session, ts, text, file_id, file_name, file_size, file_content_type"


def message_id(seq: int) -> str:
    return f"{seq:016d}"


def _row_to_message(row: tuple[Any, ...]) -> Message:
    seq, room, user, session, ts, text, file_id, name, size, content_type = row
    if text is not None:
        return Message(id=message_id(seq), room=room, user=user, session=session, ts=ts,
                       text=text)
    return Message(id=message_id(seq), room=room, user=user, session=session, ts=ts,
                   file=FileRef(id=file_id, name=name or "", size=size or 0,
                                content_type=content_type or ""))


class SqliteMessageStore:
    def __init__(self, db: SqliteDB, retention: int) -> None:
        self._db = db
        self.retention = retention
        self._prune_every = max(1, retention // 10)
        self._since_prune: Counter[str] = Counter()

    @classmethod
    async def open(cls, url: str, *, retention: int) -> SqliteMessageStore:
        db = SqliteDB(parse_sqlite_url(url), SCHEMA)
        await db.open()
        return cls(db, retention)

    def _insert(self, conn: sqlite3.Connection, batch: Sequence[Message],
                ts_ms: int) -> list[Message]:
        stored = []
        for msg in batch:
            file = msg.file if msg.WhichOneof("body") == "file" else None
            cur = conn.execute(
                f"INSERT INTO messages ({COLUMNS.partition(', ')[2]}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (msg.room, msg.user, msg.session, ts_ms, msg.text if file is None else None,
                 file.id if file else None, file.name if file else None,
                 file.size if file else None, file.content_type if file else None),
            )
            seq = cur.lastrowid
            assert seq is not None
            stored.append(stored_form(msg, message_id(seq), ts_ms))
            self._since_prune[msg.room] += 1
        self._prune(conn)
        return stored

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Drop what falls out of each busy room's retention window, in the same transaction."""
        for room in [r for r, n in self._since_prune.items() if n >= self._prune_every]:
            conn.execute(
                "DELETE FROM messages WHERE room = ? AND seq < (SELECT seq FROM messages "
                "WHERE room = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (room, room, self.retention - 1),
            )
            del self._since_prune[room]

    async def append(self, batch: Sequence[Message], ts_ms: int) -> list[Message]:
        if not batch:
            return []
        return await self._db.run(
            lambda conn: transaction(conn, lambda c: self._insert(c, batch, ts_ms)))

    async def last(self, room: str, limit: int) -> list[Message]:
        limit = max(0, min(limit, self.retention))

        def select(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM messages WHERE room = ? ORDER BY seq DESC LIMIT ?",
                (room, limit),
            ).fetchall()
            return [_row_to_message(r) for r in reversed(rows)]

        return await self._db.run(select)

    async def after(self, room: str, since: str) -> list[Message]:
        seq = order_key(since)[0]

        def select(conn: sqlite3.Connection) -> list[Message]:
            # Newest first with the retention bound, so a long gap returns what is still kept.
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM messages WHERE room = ? AND seq > ? "
                "ORDER BY seq DESC LIMIT ?", (room, seq, self.retention),
            ).fetchall()
            return [_row_to_message(r) for r in reversed(rows)]

        return await self._db.run(select)

    async def ping(self) -> None:
        await self._db.ping()

    async def aclose(self) -> None:
        await self._db.aclose()
