"""The name rules of the contract, checked over generated inputs."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatsys import validation
from chatsys.errors import BadRequest


def _user_ok(value: str) -> bool:
    allowed = all(c in " ._-" or unicodedata.category(c)[0] == "L"
                  or unicodedata.category(c) == "Nd" for c in value)
    return 1 <= len(value) <= 32 and allowed and bool(value.strip())


@given(st.text(max_size=40))
def test_user_names(value: str) -> None:
    if _user_ok(value):
        assert validation.user_name(value) == value
    else:
        with pytest.raises(BadRequest):
            validation.user_name(value)


@given(st.text(max_size=70))
def test_room_names(value: str) -> None:
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        assert validation.room_name(value) == value
    else:
        with pytest.raises(BadRequest):
            validation.room_name(value)


@pytest.mark.parametrize("name", ["Zoë", "李雷", "Ана-Мария", "ONeil", "x.y_z-1",
                                  "٣٣"])
def test_any_script_is_accepted(name: str) -> None:
    assert validation.user_name(name) == name


@pytest.mark.parametrize("bad", [None, "", "   ", "a" * 33, "a<b", "a\nb", "tab\t", "emoji🙂"])
def test_bad_users(bad: str | None) -> None:
    with pytest.raises(BadRequest):
        validation.user_name(bad)


@given(st.text(max_size=80))
def test_message_ids(value: str) -> None:
    try:
        assert validation.message_id(value) == value
    except BadRequest:
        assert (value and not re.fullmatch(r"[0-9]{1,64}(-[0-9]+)?", value)) or len(value) > 64
