"""Bearer tokens checked by the gateway: signed ones on the spot, others by module A.

With a shared ``--auth-secret`` (see :mod:`chatsys.tokens`) any gateway replica verifies a
signed token without a call; an opaque token (no secret configured) is A's to check.
"""

from __future__ import annotations

from chatsys.gateway.clients.users import UsersClient
from chatsys.stubs.chatsys.users.v1.users_pb2 import Session
from chatsys.tokens import PREFIX, TokenSigner


class Authenticator:
    def __init__(self, signer: TokenSigner | None, users: UsersClient) -> None:
        self.signer = signer
        self.users = users

    async def authenticate(self, token: str) -> Session:
        """The token's session, or :class:`~chatsys.errors.Unauthorized`."""
        if self.signer is not None and token.startswith(PREFIX):
            return self.signer.verify(token)
        return await self.users.authenticate(token)
