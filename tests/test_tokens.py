"""Signed tokens: verified by the gateway alone, rejected when forged, tampered or expired."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from chatsys.errors import Unauthorized
from chatsys.stubs.chatsys.users.v1.users_pb2 import Session
from chatsys.tokens import TokenSigner
from tests.chat_client import ChatClient
from tests.gateway_support import start_system

SECRET = "a-test-secret-of-enough-length"


def test_issue_and_verify() -> None:
    signer = TokenSigner(SECRET)
    session = Session(id="ab" * 16, user="Zoë", room="r1", created_ms=10**13)
    token = signer.issue(session, ttl_ms=60_000)
    assert token.startswith("v1.") and len(token) < 512
    assert signer.verify(token) == session


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # forged mac
    lambda t: "v1." + t[3:].replace(t.split(".")[1], t.split(".")[1][::-1]),  # tampered claims
    lambda t: t.replace("v1.", "v2."),
    lambda t: "",
    lambda t: "v1.x" * 200,
])
def test_forged_or_tampered_tokens_are_rejected(mutate) -> None:  # type: ignore[no-untyped-def]
    signer = TokenSigner(SECRET)
    token = signer.issue(Session(id="s", user="u", room="r", created_ms=10**13), 60_000)
    with pytest.raises(Unauthorized):
        signer.verify(mutate(token))
    with pytest.raises(Unauthorized):
        TokenSigner("another-secret-entirely").verify(token)


def test_expired_tokens_are_rejected() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(Session(id="s", user="u", room="r", created_ms=1000), ttl_ms=1)
    with pytest.raises(Unauthorized):
        signer.verify(token)


@pytest.mark.anyio
@pytest.mark.slow
async def test_any_gateway_verifies_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSYS_AUTH_SECRET", SECRET)
    with start_system(tmp_path) as system:
        alice = await ChatClient.connect(system.port, "alice", "signed")
        assert alice.token.startswith("v1.")
        system.a.proc.signal(signal.SIGKILL)  # A is gone: uploads still authenticate
        system.a.proc.wait(10)
        reply = await alice.upload("a.txt", b"signed upload", "text/plain")
        assert reply.status_code == 201, reply.text
        download = await alice.download(reply.json()["url"])
        assert download.content == b"signed upload"
        forged = await alice.download(reply.json()["url"], token=alice.token[:-3] + "abc")
        assert forged.status_code == 401
        with anyio.fail_after(5):
            await alice.close()
