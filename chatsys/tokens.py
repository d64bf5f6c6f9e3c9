"""Signed bearer tokens: with a shared ``CHATSYS_AUTH_SECRET`` any gateway replica verifies a
token on its own, without a call to module A.

A token is ``v1.<payload>.<mac>``: the payload (base64url JSON) names the session, user, room and
expiry plus 128 random bits, and the mac is HMAC-SHA256 over ``v1.<payload>`` with the secret.
Verification compares macs in constant time. The trade-off, documented in docs/security.md: a
signed token stays valid until it expires even after its session ends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from typing import Protocol

from chatsys.errors import Unauthorized
from chatsys.stubs.chatsys.users.v1.users_pb2 import Session

PREFIX = "v1."
MAX_TOKEN_CHARS = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionFields(Protocol):
    """What a token names: A signs its servicer's sessions, gateways verify into upb ones."""

    id: str
    user: str
    room: str
    created_ms: int


class TokenSigner:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("the auth secret must be at least 16 characters")
        self._key = secret.encode()

    def _mac(self, signed: str) -> str:
        return _b64(hmac.new(self._key, signed.encode(), hashlib.sha256).digest())

    def issue(self, session: SessionFields, ttl_ms: int) -> str:
        claims = {"s": session.id, "u": session.user, "r": session.room,
                  "c": session.created_ms, "e": session.created_ms + ttl_ms,
                  "n": secrets.token_hex(16)}
        signed = PREFIX + _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{signed}.{self._mac(signed)}"

    def verify(self, token: str) -> Session:
        """The token's session, or :class:`Unauthorized` (bad shape, bad mac, or expired)."""
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(PREFIX):
            raise Unauthorized("invalid or expired token")
        signed, _, mac = token.rpartition(".")
        if not hmac.compare_digest(self._mac(signed), mac):
            raise Unauthorized("invalid or expired token")
        try:
            claims = json.loads(_unb64(signed.removeprefix(PREFIX)))
            session = Session(id=str(claims["s"]), user=str(claims["u"]), room=str(claims["r"]),
                              created_ms=int(claims["c"]))
            expires = int(claims["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Unauthorized("invalid or expired token") from None
        if expires <= time.time_ns() // 1_000_000:
            raise Unauthorized("invalid or expired token")
        return session


def signer_for(secret: str) -> TokenSigner | None:
    return TokenSigner(secret) if secret else None
