"""The WebSocket wire format: client frames parsed and validated, server frames encoded.

Parsing is pure (no I/O) so every rule of the contract can be tested in isolation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chatsys.errors import BadRequest, ChatError, TooLarge
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message, Presence, Stored

REF_MAX = 128
FILE_ID_MAX = 64


@dataclass(frozen=True)
class TextFrame:
    ref: str | None
    text: str


@dataclass(frozen=True)
class FileFrame:
    ref: str | None
    file_id: str


@dataclass(frozen=True)
class PingFrame:
    ref: str | None


ClientFrame = TextFrame | FileFrame | PingFrame


class FrameError(ChatError):
    """A frame refused by :func:`parse`; carries the ref when the frame had a readable one.

    Only its two kinds are raised, each with the code of its contract error:
    :class:`MalformedFrame` and :class:`FrameTooLarge`."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


class MalformedFrame(FrameError, BadRequest):
    """Not a frame of the protocol: ``bad_request``, and garbage towards the 1008 limit."""


class FrameTooLarge(FrameError, TooLarge):
    """A well-formed text over ``--max-text-chars``: ``too_large``, and not garbage."""


def _ref(obj: dict[str, Any]) -> str | None:
    ref = obj.get("ref")
    if ref is None:
        return None
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        ref = str(ref)
    if not isinstance(ref, str) or len(ref) > REF_MAX:
        raise MalformedFrame(f"ref must be a string of at most {REF_MAX} characters")
    return ref


def parse(data: str | bytes, *, max_text_chars: int) -> ClientFrame:
    """One client frame, or a :class:`FrameError` naming what is wrong."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedFrame("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise MalformedFrame("frame must be a JSON object")
    ref = _ref(obj)
    kind = obj.get("type")
    if kind == "text":
        text = obj.get("text")
        if not isinstance(text, str):
            raise MalformedFrame("text frame needs a string 'text'", ref)
        if not text.strip():
            raise MalformedFrame("text must not be empty", ref)
        if len(text) > max_text_chars:
            raise FrameTooLarge(f"text is longer than {max_text_chars} characters", ref)
        return TextFrame(ref, text)
    if kind == "file":
        file_id = obj.get("file_id")
        if not isinstance(file_id, str) or not file_id or len(file_id) > FILE_ID_MAX:
            raise MalformedFrame("file frame needs the 'file_id' of an upload", ref)
        return FileFrame(ref, file_id)
    if kind == "ping":
        return PingFrame(ref)
    if kind is None:
        raise MalformedFrame("frame needs a 'type'", ref)
    raise MalformedFrame(f"unknown frame type {str(kind)[:32]!r}", ref)


# One encoder for every frame: ``json.dumps`` with non-default options builds a new
# JSONEncoder on each call, and frames are encoded once or twice per message.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def message_dict(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "message", "id": msg.id, "room": msg.room, "user": msg.user,
                           "session": msg.session, "ts": msg.ts}
    if msg.WhichOneof("body") == "file":
        f = msg.file
        out["kind"] = "file"
        out["file"] = {"id": f.id, "name": f.name, "size": f.size,
                       "content_type": f.content_type, "url": f"/api/files/{f.id}"}
    else:
        out["kind"] = "text"
        out["text"] = msg.text
    return out


def message(msg: Message) -> str:
    return _dumps(message_dict(msg))


def presence(p: Presence) -> str:
    event = "join" if p.event == Presence.EVENT_JOIN else "leave"
    return _dumps({"type": "presence", "room": p.room, "user": p.user, "session": p.session,
                   "event": event})


def welcome(session: str, token: str, user: str, room: str, history: list[str]) -> str:
    """``history`` holds already-encoded message frames, spliced in as they are."""
    head = _dumps({"type": "welcome", "session": session, "token": token, "user": user,
                   "room": room})
    return f'{head[:-1]},"history":[{",".join(history)}]}}'


def ack(ref: str | None, msg: Stored) -> str:
    return _dumps({"type": "ack", "ref": ref, "id": msg.id, "ts": msg.ts})


def pong(ref: str | None) -> str:
    return _dumps({"type": "pong", "ref": ref})


def error(ref: str | None, err: ChatError) -> str:
    return _dumps({"type": "error", "ref": ref, "code": err.code, "message": err.message})
