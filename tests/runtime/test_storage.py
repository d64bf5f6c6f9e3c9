"""One contract for every backend of A's store Protocols: SQLite and Redis.

Add a backend by extending ``BACKENDS`` and ``_settings``; every test then runs against it.
Redis is a real ``redis-server`` (one per session, see tests/redis_support.py); each test gets
an emptied database of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from chatsys.chat.store import MessageStore, open_message_store, order_key
from chatsys.runtime.settings import Settings
from chatsys.runtime.storage import StoreConfigError, backend_for, by_backend
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import FileRef, Message
from chatsys.users.store import SessionRecord, SessionStore, open_session_store
from tests.redis_support import RedisServer, flush_db

pytestmark = pytest.mark.anyio
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.slow)]  # redis: a real server
CONTRACT_DB = 1  # the scale-out tests use database 0 of their own servers


def _settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "sqlite":
        return Settings(verbs=("users", "chat"), data_dir=tmp_path,
                        store=f"sqlite:///{tmp_path / 'chatsys.db'}")
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        flush_db(server.port, CONTRACT_DB)
        return Settings(verbs=("users", "chat"), data_dir=tmp_path, store=server.url(CONTRACT_DB))
    raise AssertionError(backend)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return _settings(request.param, tmp_path, request)


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[SessionStore]:
    store = await open_session_store(settings)
    yield store
    await store.aclose()


@pytest.fixture
async def messages(settings: Settings) -> AsyncIterator[MessageStore]:
    store = await open_message_store(settings, retention=50)
    yield store
    await store.aclose()


def _h(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def text(room: str, body: str, user: str = "ana") -> Message:
    return Message(room=room, user=user, session="s1", text=body)


async def test_session_create_lookup_end(sessions: SessionStore) -> None:
    with anyio.fail_after(5):
        await sessions.ping()
        record = SessionRecord("sid1", "ana", "lobby", 1_000)
        await sessions.create([(record, _h("tok"))])
        assert await sessions.lookup(_h("tok"), 0) == record
        assert await sessions.lookup(_h("forged"), 0) is None
        await sessions.end(["sid1"])
        assert await sessions.lookup(_h("tok"), 0) is None
        await sessions.end(["sid1"])  # idempotent


async def test_sessions_are_created_and_ended_in_batches(sessions: SessionStore) -> None:
    with anyio.fail_after(5):
        records = [SessionRecord(f"sid{i}", f"u{i}", "lobby", 1_000 + i) for i in range(3)]
        await sessions.create([(r, _h(r.id)) for r in records])
        assert [await sessions.lookup(_h(r.id), 0) for r in records] == records
        await sessions.end(["sid0", "unknown", "sid2"])
        assert [await sessions.lookup(_h(r.id), 0) for r in records] == [None, records[1], None]


async def test_concurrent_session_batches(sessions: SessionStore) -> None:
    """Batches back to back on one connection, as a join storm sends them (a cursor kept alive
    across statements once made every other batch fail with SQLite's "API misuse")."""
    async def one(batch: int, size: int) -> None:
        rows = [(SessionRecord(f"b{batch}-{i}", "u", "r", 1), _h(f"b{batch}-{i}"))
                for i in range(size)]
        await sessions.create(rows)
        assert await sessions.lookup(rows[-1][1], 0) == rows[-1][0]
        await sessions.end([record.id for record, _ in rows])

    with anyio.fail_after(10):
        for round_ in range(20):
            async with anyio.create_task_group() as tg:
                for k in range(10):
                    tg.start_soon(one, round_ * 10 + k, k % 4 + 1)


async def test_session_expiry_and_purge(sessions: SessionStore) -> None:
    with anyio.fail_after(5):
        await sessions.create([(SessionRecord("old", "ana", "lobby", 1_000), _h("old")),
                               (SessionRecord("new", "bo", "lobby", 5_000), _h("new"))])
        assert await sessions.lookup(_h("old"), 2_000) is None  # created before the cut-off
        assert (await sessions.lookup(_h("new"), 2_000)) is not None
        assert await sessions.purge(2_000) == 1
        assert await sessions.lookup(_h("old"), 0) is None
        assert (await sessions.lookup(_h("new"), 0)) is not None


async def test_append_order_and_ids_sort(messages: MessageStore) -> None:
    with anyio.fail_after(5):
        first = await messages.append([text("r1", "a"), text("r2", "b"), text("r1", "c")], 42)
        second = await messages.append(
            [Message(room="r1", user="bo", session="s2",
                     file=FileRef(id="f1", name="x.txt", size=3, content_type="text/plain"))], 43)
        stored = first + second
        ids = [m.id for m in stored]
        # The contract orders ids within a room (Redis: one stream per room, so two rooms may
        # issue the same id); in each room they are unique and sort as strings and as keys.
        r1_ids = [ids[0], ids[2], ids[3]]
        assert r1_ids == sorted(r1_ids) and len(set(r1_ids)) == 3
        assert [order_key(i) for i in r1_ids] == sorted(order_key(i) for i in r1_ids)
        assert [m.ts for m in stored] == [42, 42, 42, 43]
        r1 = await messages.last("r1", 10)
        assert [m.text for m in r1[:2]] == ["a", "c"]
        assert r1[2].WhichOneof("body") == "file" and r1[2].file.name == "x.txt"
        assert [m.id for m in r1] == [ids[0], ids[2], ids[3]]


async def test_history_last_n_and_since(messages: MessageStore) -> None:
    with anyio.fail_after(5):
        stored = await messages.append([text("r", str(i)) for i in range(10)], 1)
        await messages.append([text("other", "x")], 2)
        last3 = await messages.last("r", 3)
        assert [m.text for m in last3] == ["7", "8", "9"]
        after = await messages.after("r", stored[5].id)
        assert [m.text for m in after] == ["6", "7", "8", "9"]
        assert await messages.after("r", stored[-1].id) == []
        assert await messages.last("empty", 5) == []


async def test_retention_bound(messages: MessageStore) -> None:
    with anyio.fail_after(10):
        assert messages.retention == 50
        for batch in range(12):
            await messages.append([text("busy", f"{batch}-{i}") for i in range(10)], 1)
        kept = await messages.after("busy", "0")
        assert len(kept) == 50
        assert kept[-1].text == "11-9" and kept[0].text == "7-0"
        assert len(await messages.last("busy", 1000)) == 50


async def test_durable_across_reopen(settings: Settings) -> None:
    with anyio.fail_after(10):
        store = await open_message_store(settings)
        stored = await store.append([text("r", "persist")], 7)
        await store.aclose()
        sessions = await open_session_store(settings)
        await sessions.create([(SessionRecord("sid", "ana", "r", 1), _h("t"))])
        await sessions.aclose()

        store = await open_message_store(settings)
        try:
            again = await store.last("r", 10)
            assert [(m.id, m.text, m.ts) for m in again] == [(stored[0].id, "persist", 7)]
            newer = await store.append([text("r", "next")], 8)
            assert newer[0].id > stored[0].id
        finally:
            await store.aclose()
        sessions = await open_session_store(settings)
        try:
            assert (await sessions.lookup(_h("t"), 0)) is not None
        finally:
            await sessions.aclose()


async def test_ids_sort_as_strings_past_a_digit_boundary(messages: MessageStore) -> None:
    """Enough messages in one batch that a raw counter would go from 9 to 10 (Redis: the
    sequence within one millisecond): the issued ids still sort as strings and resume works
    from any of them."""
    with anyio.fail_after(10):
        stored = await messages.append([text("digits", str(i)) for i in range(25)], 1)
        ids = [m.id for m in stored]
        assert ids == sorted(ids) and len(set(ids)) == 25
        assert len({len(i) for i in ids}) == 1  # fixed width
        for cut in (8, 9, 10, 19):
            after = await messages.after("digits", ids[cut])
            assert [m.id for m in after] == ids[cut + 1:]
        assert [m.id for m in await messages.after("digits", "0")] == ids


def test_factory_rejects_unknown_urls() -> None:
    assert backend_for("sqlite:////tmp/x.db") == "sqlite"
    assert backend_for("redis://localhost:6379/0") == "redis"
    assert backend_for("redis://:secret@redis.example:6380") == "redis"
    for bad, why in [("redis://", "names no host"), ("redis://h:port/0", "port"),
                     ("redis://h:6379/zero", "database must be a number"),
                     ("redis://h/0?timeout=1", "options")]:
        with pytest.raises(StoreConfigError, match=why):
            backend_for(bad)
    with pytest.raises(StoreConfigError, match="expected sqlite"):
        backend_for("postgres://x")


def test_the_one_switch_calls_only_the_chosen_opener() -> None:
    called: list[str] = []

    def opener(name: str) -> Callable[[], str]:
        return lambda: called.append(name) or name

    assert by_backend("sqlite:////tmp/x.db", sqlite=opener("sqlite"), redis=opener("redis")) \
        == "sqlite"
    assert by_backend("redis://h:6379/0", sqlite=opener("sqlite"), redis=opener("redis")) \
        == "redis"
    with pytest.raises(StoreConfigError):
        by_backend("postgres://x", sqlite=opener("sqlite"), redis=opener("redis"))
    assert called == ["sqlite", "redis"]


def test_redis_ids_round_trip() -> None:
    from chatsys.chat.redis_store import message_id, stream_id

    assert message_id("1700000000000-10") == "0001700000000000-0000000010"
    assert stream_id("0001700000000000-0000000010") == "1700000000000-10"
    assert stream_id("1700000000000-9") == "1700000000000-9"
    assert message_id("1700000000000-9") < message_id("1700000000000-10")
    assert order_key(message_id("1700000000000-10")) == (1700000000000, 10)
