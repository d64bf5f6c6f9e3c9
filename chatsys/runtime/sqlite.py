"""One SQLite connection confined to one dedicated thread, driven from the event loop.

SQLite calls block (disk I/O, fsync, busy waits), so none may run on the event loop. Giving each
store its own single worker thread keeps the connection thread-confined and serialises every
statement in submission order: a read submitted after a commit always sees that commit. Several
processes (users and chat run apart in Kubernetes) may open the same file; WAL mode lets readers
run beside the one writer, and ``busy_timeout`` makes a writer wait for the lock instead of failing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000


def parse_sqlite_url(url: str) -> Path:
    """``sqlite:///abs/path`` → the path; anything else is a configuration error."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite:/// URL: {url!r}")
    path = url.removeprefix("sqlite:///")
    if not path:
        raise ValueError(f"{url!r} names no file")
    # As in SQLAlchemy: sqlite:///relative.db and sqlite:////absolute/path.db.
    return Path(path)


class SqliteDB:
    """A connection in its own thread; ``await db.run(fn, *args)`` calls ``fn(conn, *args)``."""

    def __init__(self, path: Path, schema: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._schema = schema
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.name}")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL syncs the WAL on every commit: an acknowledged message survives a kill or power
        # loss. NORMAL (sessions) survives a process kill; only an OS crash may lose the newest.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.executescript(self._schema)
        self._conn = conn

    async def open(self) -> None:
        await self._submit(lambda: self._open())

    async def _submit(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wrap_future(self._executor.submit(fn), loop=loop)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("database is closed")
        return await self._submit(lambda: fn(conn, *args))

    async def ping(self) -> None:
        await self.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        """Close after every queued statement ran; a checkpoint folds the WAL into the file."""
        conn, self._conn = self._conn, None
        if conn is not None:
            def close() -> None:
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    conn.close()

            await self._submit(close)
        self._executor.shutdown(wait=True)


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
