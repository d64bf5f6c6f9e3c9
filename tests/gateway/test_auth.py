"""Token checks: a signed token is verified on the spot, with no call to A."""

from __future__ import annotations

import time

import pytest

from chatsys.errors import Unauthorized, Unavailable
from chatsys.gateway.auth import Authenticator
from chatsys.gateway.clients.caller import Caller
from chatsys.gateway.clients.users import UsersClient
from chatsys.runtime.grpc_clients import ChannelPool, parse_target
from chatsys.stubs.chatsys.users.v1.users_pb2 import Session
from chatsys.tokens import TokenSigner
from tests.support import unused_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_signed_tokens_need_no_a_and_others_go_to_it() -> None:
    signer = TokenSigner("a secret of sixteen+ chars")
    users = UsersClient(Caller(ChannelPool(parse_target(f"127.0.0.1:{unused_port()}")), 2.0))
    auth = Authenticator(signer, users)
    try:
        session = Session(id="s1", user="ann", room="lobby", created_ms=time.time_ns() // 10**6)
        assert await auth.authenticate(signer.issue(session, 60_000)) == session
        with pytest.raises(Unauthorized):
            await auth.authenticate(signer.issue(session, 60_000)[:-2] + "xx")
        with pytest.raises(Unavailable):  # not signed: A's to check, and A is not there
            await auth.authenticate("opaque-token")
    finally:
        users.caller.pool.close()
