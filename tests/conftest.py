from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """grpclib and Quart run only on asyncio."""
    return "asyncio"
