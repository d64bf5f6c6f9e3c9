"""Validation of the names the contract constrains, shared by the gateway and module A."""

from __future__ import annotations

import re
import unicodedata

from chatsys.errors import BadRequest

USER_MAX = 32
ROOM_MAX = 64
_ROOM = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER_PUNCT = frozenset(" ._-")


def _is_user_char(ch: str) -> bool:
    if ch in _USER_PUNCT:
        return True
    # Letters of any script and decimal digits; \w would also admit connector punctuation.
    return unicodedata.category(ch)[0] == "L" or unicodedata.category(ch) == "Nd"


def user_name(value: str | None) -> str:
    """A user name: 1–32 letters (any script), digits, space, '.', '_', '-'; not blank."""
    if value is None or value == "":
        raise BadRequest("user is required")
    if len(value) > USER_MAX:
        raise BadRequest(f"user must be at most {USER_MAX} characters")
    if not all(_is_user_char(ch) for ch in value):
        raise BadRequest("user may contain only letters, digits, space, '.', '_' and '-'")
    if not value.strip():
        raise BadRequest("user must not be blank")
    return value


def room_name(value: str | None) -> str:
    """A room name: 1–64 ASCII letters, digits, '_' or '-'."""
    if value is None or value == "":
        raise BadRequest("room is required")
    if len(value) > ROOM_MAX:
        raise BadRequest(f"room must be at most {ROOM_MAX} characters")
    if not _ROOM.fullmatch(value):
        raise BadRequest("room may contain only letters, digits, '_' and '-'")
    return value


def message_id(value: str | None) -> str:
    """A message id as this system issues them (digits, '-' separated); empty means none."""
    if not value:
        return ""
    if len(value) > 64 or not re.fullmatch(r"[0-9]+(-[0-9]+)?", value):
        raise BadRequest("since must be a message id")
    return value
