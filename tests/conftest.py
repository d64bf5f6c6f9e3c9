from __future__ import annotations

import pytest

from tests.redis_support import redis_server  # noqa: F401  (a session-scoped fixture)


@pytest.fixture
def anyio_backend() -> str:
    """grpclib and Quart run only on asyncio."""
    return "asyncio"
