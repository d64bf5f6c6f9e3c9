"""The frame parser as pure logic: every input is either a valid frame or a FrameError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatsys.errors import BadRequest, TooLarge
from chatsys.gateway import frames

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.binary(max_size=256) | st.text(max_size=256))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes | str) -> None:
    try:
        frames.parse(data, max_text_chars=100)
    except frames.FrameError as exc:
        assert exc.code in ("bad_request", "too_large") and exc.message


@given(st.dictionaries(st.sampled_from(["type", "text", "ref", "file_id"]), JSON))
def test_arbitrary_objects_are_valid_or_rejected(obj: dict[str, object]) -> None:
    try:
        frame = frames.parse(json.dumps(obj), max_text_chars=100)
    except frames.FrameError:
        return
    assert obj["type"] in ("text", "file", "ping")
    assert type(frame).__name__.lower().startswith(str(obj["type"]))


@given(st.text(min_size=1, max_size=100).filter(str.strip), st.text(max_size=128))
def test_valid_text_frames_round_trip(text: str, ref: str) -> None:
    frame = frames.parse(json.dumps({"type": "text", "text": text, "ref": ref}),
                         max_text_chars=100)
    assert frame == frames.TextFrame(ref, text)


def test_limits_and_codes() -> None:
    with pytest.raises(frames.FrameError) as too_long:
        frames.parse(json.dumps({"type": "text", "text": "x" * 101, "ref": "a"}),
                     max_text_chars=100)
    assert too_long.value.code == "too_large" and too_long.value.ref == "a"
    assert isinstance(too_long.value, TooLarge) and not isinstance(too_long.value, BadRequest)
    with pytest.raises(frames.FrameError) as blank:
        frames.parse(json.dumps({"type": "text", "text": "   "}), max_text_chars=100)
    assert blank.value.code == "bad_request" and isinstance(blank.value, BadRequest)
    assert frames.parse('{"type":"ping","ref":7}', max_text_chars=1) == frames.PingFrame("7")
