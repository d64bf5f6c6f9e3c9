"""Choosing a storage backend from ``--store``: the one place that knows the URL schemes.

Every store Protocol of A has one factory (``open_session_store``, ``open_message_store``,
``open_broker``) that hands one opener per backend to :func:`by_backend`, the only switch over
the backends; an unknown or malformed URL stops the process at startup with a clear message
instead of failing on the first request. Redis clients are built here too, so
every Redis-backed store of A connects the same way (timeouts, retries, durability check).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")
log = logging.getLogger("chatsys.storage")
REDIS_TIMEOUT = 5.0  # seconds a Redis command may take before the call fails (UNAVAILABLE)


class StoreConfigError(RuntimeError):
    """``--store`` names a backend this build cannot open."""


class StoreUnavailable(RuntimeError):
    """The store named by ``--store`` did not answer at startup."""


def is_outage(exc: BaseException) -> bool:
    """``exc`` says the storage could not be reached or answer in time (Redis down, a socket
    reset, a timeout), as opposed to a bug: the client is told a backend is unavailable."""
    if isinstance(exc, OSError):  # includes socket and timeout errors
        return True
    try:
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
    except ImportError:
        return False
    return isinstance(exc, ConnectionError | TimeoutError | BusyLoadingError)


class Store(Protocol):
    """What every store offers the process: a readiness probe and a flushing close."""

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class RedisURL:
    host: str
    port: int
    db: int
    password: str | None = None
    username: str | None = None


def parse_redis_url(url: str) -> RedisURL:
    """``redis://[user:password@]host[:port][/db]``; anything else is a configuration error."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise StoreConfigError(f"--store={url!r}: expected redis://host:port/db")
    try:
        port = parts.port or 6379
    except ValueError:
        raise StoreConfigError(f"--store={url!r}: the port is not a number") from None
    if not parts.hostname:
        raise StoreConfigError(f"--store={url!r}: names no host")
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise StoreConfigError(f"--store={url!r}: the database must be a number, got {db_text!r}")
    if parts.query or parts.fragment:
        raise StoreConfigError(f"--store={url!r}: options in the URL are not supported")
    return RedisURL(parts.hostname, port, int(db_text), parts.password, parts.username)


def backend_for(url: str) -> str:
    """``"sqlite"`` or ``"redis"``; rejects everything else with a clear reason."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith("redis://"):
        parse_redis_url(url)
        return "redis"
    raise StoreConfigError(f"--store={url!r}: expected sqlite:///path or redis://host:port/db")


def by_backend(url: str, *, sqlite: Callable[[], T], redis: Callable[[], T]) -> T:
    """Call the opener of the backend ``url`` names, and only that one: a backend's module
    (and its client library) is imported only when it is chosen. Every factory passes one
    opener per backend, so a new backend is a new keyword here that each of them must take."""
    openers = {"sqlite": sqlite, "redis": redis}
    return openers[backend_for(url)]()


def redis_client(url: str, **overrides: Any) -> Redis:
    """A pooled asyncio client; commands time out instead of hanging on a lost server."""
    from redis.asyncio import Redis

    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "host": target.host, "port": target.port, "db": target.db,
        "password": target.password, "username": target.username,
        "socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT,
        "decode_responses": True, "client_name": "chatsys-a",
    }
    options.update(overrides)
    return Redis(**options)


async def connect_redis(url: str, **overrides: Any) -> Redis:
    """:func:`redis_client` that has answered a PING (else :class:`StoreUnavailable`)."""
    from redis.exceptions import RedisError

    client = redis_client(url, **overrides)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise StoreUnavailable(f"--store={url}: cannot reach Redis: {exc}") from None
    return client


async def check_redis_durability(client: Redis) -> None:
    """Warn when Redis would acknowledge a write it has not fsynced (acks promise durability).

    A managed Redis may refuse CONFIG: then the operator's settings are taken on trust.
    """
    from redis.exceptions import ResponseError

    try:
        config = await client.config_get("append*")
    except ResponseError:
        return
    if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
        log.warning("Redis runs with appendonly=%s appendfsync=%s: an acknowledged message may "
                    "be lost if Redis itself crashes (use appendonly yes, appendfsync always)",
                    config.get("appendonly"), config.get("appendfsync"))
