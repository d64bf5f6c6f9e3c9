"""A real WebSocket/HTTP client of the gateway, as the contract describes it, for tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import websockets
from websockets.asyncio.client import ClientConnection

Frame = dict[str, Any]


class ChatClient:
    def __init__(self, base: str, ws: ClientConnection, welcome: Frame) -> None:
        self.base = base
        self.ws = ws
        self.welcome = welcome
        self.token: str = welcome["token"]
        self.session: str = welcome["session"]
        self.room: str = welcome["room"]
        self.frames: list[Frame] = []  # everything received, in order
        self.inbox: list[Frame] = []  # received but not yet taken by wait_for/messages
        self._refs = 0

    @classmethod
    async def connect(cls, port: int, user: str, room: str, since: str | None = None,
                      seconds: float = 10.0) -> ChatClient:
        query = {"user": user, "room": room} | ({"since": since} if since else {})
        url = f"ws://127.0.0.1:{port}/ws/chat?" + httpx.QueryParams(query).__str__()
        with anyio.fail_after(seconds):
            ws = await websockets.connect(url, max_size=None, compression=None)
            welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        return cls(f"http://127.0.0.1:{port}", ws, welcome)

    def next_ref(self) -> str:
        self._refs += 1
        return f"r{self._refs}"

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def send_text(self, text: str) -> str:
        ref = self.next_ref()
        await self.send({"type": "text", "text": text, "ref": ref})
        return ref

    async def recv(self, seconds: float = 5.0) -> Frame:
        with anyio.fail_after(seconds):
            frame = json.loads(await self.ws.recv())
        self.frames.append(frame)
        return frame

    async def wait_for(self, match: Callable[[Frame], bool], seconds: float = 5.0) -> Frame:
        """The first unconsumed frame that matches; frames passed over stay in the inbox."""
        for i, frame in enumerate(self.inbox):
            if match(frame):
                return self.inbox.pop(i)
        with anyio.fail_after(seconds):
            while True:
                frame = await self.recv(seconds)
                if match(frame):
                    return frame
                self.inbox.append(frame)

    async def ack_or_error(self, ref: str, seconds: float = 5.0) -> Frame:
        return await self.wait_for(
            lambda f: f["type"] in ("ack", "error") and f.get("ref") == ref, seconds)

    async def messages(self, count: int, seconds: float = 10.0) -> list[Frame]:
        got: list[Frame] = []
        with anyio.fail_after(seconds):
            while len(got) < count:
                got.append(await self.wait_for(lambda f: f["type"] == "message", seconds))
        return got

    async def upload(self, name: str, data: bytes, content_type: str = "application/pdf",
                     room: str | None = None, token: str | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(
                f"{self.base}/api/files", params={"room": room or self.room},
                headers={"Authorization": f"Bearer {token or self.token}"},
                files={"file": (name, data, content_type)})

    async def download(self, url: str, token: str | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.get(f"{self.base}{url}",
                                    headers={"Authorization": f"Bearer {token or self.token}"})

    async def close(self) -> None:
        await self.ws.close()


async def refused(port: int, query: str) -> tuple[int, Frame]:
    """Status and JSON body of an upgrade the gateway refuses."""
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/chat?{query}")
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, json.loads(bytes(exc.response.body or b"{}"))
    await ws.close()
    raise AssertionError(f"upgrade with {query!r} was accepted")


async def wait_status(url: str, status: int, seconds: float) -> None:
    """Poll ``url`` until it answers ``status``, failing after ``seconds``."""
    async with httpx.AsyncClient(timeout=2) as http:
        with anyio.fail_after(seconds):
            while True:
                try:
                    if (await http.get(url)).status_code == status:
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.05)
