"""Streaming multipart/form-data: the ``file`` field's bytes as they arrive, counted.

Quart's form parsing spools the whole body before a route sees it and only checks the
Content-Length header; an upload here is parsed chunk by chunk instead, so the gateway holds at
most one network chunk of it, streams it on to module B, and stops with 413 the moment the
byte count passes the limit — chunked bodies included.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from chatsys.errors import BadRequest, TooLarge

FIELD = "file"


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    field_name: bytes = b""
    data: list[bytes] = field(default_factory=list)


@dataclass
class FilePart:
    """The ``file`` field: its name and type from the part headers, then its bytes."""

    filename: str
    content_type: str
    chunks: AsyncIterator[bytes]


def boundary_of(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise BadRequest("expected a multipart/form-data body with a 'file' field")
    return params[b"boundary"]


class _Reader:
    def __init__(self, boundary: bytes, body: AsyncIterable[bytes], limit: int) -> None:
        self.body = body.__aiter__()
        self.limit = limit
        self.file_bytes = 0
        self.body_bytes = 0
        self.part: _Part | None = None
        self.file_started = False
        self.file_done = False
        self.pending: list[bytes] = []
        self._field = b""
        self._value = b""
        self.parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        })

    # parser callbacks (synchronous)
    def _part_begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        assert self.part is not None
        self.part.headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        assert self.part is not None
        _, params = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        self.part.field_name = params.get(b"name", b"")
        if self.part.field_name == FIELD.encode() and not self.file_started:
            self.file_started = True
            self.filename = params.get(b"filename", b"").decode("utf-8", "replace")
            self.content_type = self.part.headers.get(b"content-type", b"").decode(
                "latin-1", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        assert self.part is not None
        if self.part.field_name == FIELD.encode() and self.file_started and not self.file_done:
            self.file_bytes += end - start
            if self.file_bytes > self.limit:
                raise TooLarge(f"file is larger than {self.limit} bytes")
            self.pending.append(data[start:end])

    def _part_end(self) -> None:
        if self.part is not None and self.part.field_name == FIELD.encode() and self.file_started:
            self.file_done = True
        self.part = None

    async def feed_next(self) -> bool:
        """Parse one more body chunk; False at the end of the body."""
        try:
            chunk = await anext(self.body)
        except StopAsyncIteration:
            return False
        self.body_bytes += len(chunk)
        # Other fields are tolerated, but never more than a little besides the file.
        if self.body_bytes > self.limit + 64 * 1024:
            raise TooLarge(f"upload is larger than {self.limit} bytes")
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from None
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            while self.pending:
                yield self.pending.pop(0)
            if self.file_done:
                return
            if not await self.feed_next():
                raise BadRequest("multipart body ended inside the file")


async def read_file_part(content_type: str | None, body: AsyncIterable[bytes],
                         limit: int) -> FilePart:
    """Parse until the ``file`` part's headers; its bytes then stream from ``chunks``."""
    reader = _Reader(boundary_of(content_type), body, limit)
    while not reader.file_started:
        if not await reader.feed_next():
            raise BadRequest("multipart field 'file' is required")
    return FilePart(reader.filename, reader.content_type, reader.chunks())
