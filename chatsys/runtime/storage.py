"""Choosing a storage backend from ``--store``: the one place that knows the URL schemes.

Every store Protocol of A has one factory (``open_session_store``, ``open_message_store``) that
calls :func:`backend_for`; an unknown or not-yet-built backend stops the process at startup with
a clear message instead of failing on the first request.
"""

from __future__ import annotations

from typing import Protocol


class StoreConfigError(RuntimeError):
    """``--store`` names a backend this build cannot open."""


class Store(Protocol):
    """What every store offers the process: a readiness probe and a flushing close."""

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def backend_for(url: str) -> str:
    """``"sqlite"`` for ``sqlite:///path``; rejects everything else with a clear reason."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith("redis://"):
        raise StoreConfigError(f"--store={url}: the Redis backend is not supported yet; "
                               "use sqlite:///path (the default)")
    raise StoreConfigError(f"--store={url!r}: expected sqlite:///path")
