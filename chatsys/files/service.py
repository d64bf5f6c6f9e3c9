"""FileService: uploads streamed to disk in chunks with a hard size limit, downloads in chunks.

Names and content types come from clients and end up in HTTP headers and on disk listings, so
they are cleaned here, once: the stored name is a bare file name, the type a plain type/subtype.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import AsyncIterator

import anyio

from chatsys import validation
from chatsys.errors import BadRequest, NotFound
from chatsys.files.store import CHUNK, FileRecord, LocalFileStore, Upload
from chatsys.runtime import rpc
from chatsys.stubs.chatsys.files.v1 import (
    DownloadRequest,
    DownloadResponse,
    FileInfo,
    FileServiceBase,
    StatRequest,
    StatResponse,
    UploadRequest,
    UploadResponse,
)

MAX_NAME = 255
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")
DEFAULT_TYPE = "application/octet-stream"


def clean_name(name: str) -> str:
    """A bare, printable file name: no directories, no control characters, at most 255 chars."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    name = name[:MAX_NAME].strip()
    return "file" if name in ("", ".", "..") else name


def clean_content_type(value: str) -> str:
    value = value.split(";", 1)[0].strip().lower()
    return value if _CONTENT_TYPE.fullmatch(value) else DEFAULT_TYPE


def file_info(record: FileRecord) -> FileInfo:
    return FileInfo(id=record.id, name=record.name, size=record.size,
                    content_type=record.content_type, room=record.room, owner=record.owner,
                    sha256=record.sha256, created_ms=record.created_ms)


class FileService(FileServiceBase):
    def __init__(self, store: LocalFileStore, *, max_file_bytes: int) -> None:
        self.store = store
        self.max_file_bytes = max_file_bytes

    @rpc.unary
    async def upload(self, messages: AsyncIterator[UploadRequest]) -> UploadResponse:
        first = await anext(messages, None)
        if first is None or first.meta is None:
            raise BadRequest("the first upload message must carry meta")
        meta = first.meta
        room = validation.room_name(meta.room)
        owner = validation.user_name(meta.owner) if meta.owner else ""
        limit = self.max_file_bytes
        if meta.max_size > 0:
            limit = min(meta.max_size, limit)
        upload: Upload = await self.store.begin(limit)
        try:
            async for part in messages:
                if part.data is None:
                    raise BadRequest("only data may follow meta")
                if part.data:
                    await upload.write(part.data)
            record = await upload.commit(clean_name(meta.name),
                                         clean_content_type(meta.content_type), room, owner,
                                         time.time_ns() // 1_000_000)
        except BaseException:
            await upload.abort()
            raise
        return UploadResponse(info=file_info(record))

    @rpc.stream
    async def download(self, message: DownloadRequest) -> AsyncIterator[DownloadResponse]:
        record = await self.store.stat(message.id)
        fh = await self.store.open_data(message.id) if record else None
        if record is None or fh is None:
            raise NotFound("no such file")
        try:
            yield DownloadResponse(info=file_info(record))
            while chunk := await anyio.to_thread.run_sync(fh.read, CHUNK):
                yield DownloadResponse(data=chunk)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(fh.close)

    @rpc.unary
    async def stat(self, message: StatRequest) -> StatResponse:
        record = await self.store.stat(message.id)
        if record is None:
            raise NotFound("no such file")
        return StatResponse(info=file_info(record))
