"""FileService as the gateway calls it: upload, stat and download, streamed."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing

from grpclib.client import Channel

from chatsys.errors import Internal, Unavailable, from_grpc
from chatsys.gateway.clients.caller import WIRE_ERRORS, Caller, Retry
from chatsys.stubs.chatsys.files.v1 import (
    DownloadRequest,
    DownloadResponse,
    FileInfo,
    FileServiceStub,
    StatRequest,
    UploadMeta,
    UploadRequest,
)

UPLOAD_DEADLINE_FACTOR = 12  # an upload or download streams up to --max-file-bytes


class FilesClient:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def upload(self, meta: UploadMeta, chunks: AsyncIterable[bytes]) -> FileInfo:
        """Stream ``chunks`` to B; retried only while none of them has been read."""
        started = False

        async def requests() -> AsyncIterator[UploadRequest]:
            nonlocal started
            started = True
            yield UploadRequest(meta=meta)
            async for chunk in chunks:
                yield UploadRequest(data=chunk)

        async def call(channel: Channel, left: float) -> FileInfo:
            if started:  # the body was consumed by a failed attempt: it cannot be sent again
                raise Unavailable("the upload was interrupted, try again")
            reply = await FileServiceStub(channel).upload(requests(), timeout=left)
            assert reply.info is not None
            return reply.info

        return await self.caller.call("Upload", call, retry=Retry.UNSENT,
                                      budget=self.caller.timeout * UPLOAD_DEADLINE_FACTOR)

    async def stat(self, file_id: str) -> FileInfo:
        request = StatRequest(id=file_id)
        reply = await self.caller.call("Stat", lambda ch, t: FileServiceStub(ch).stat(
            request, timeout=t), retry=Retry.BROKEN)
        assert reply.info is not None
        return reply.info

    async def download(self, file_id: str) -> tuple[FileInfo, AsyncIterator[bytes]]:
        """The file's info, and an iterator over its bytes (the stream stays open until read)."""
        request = DownloadRequest(id=file_id)
        timeout = self.caller.timeout * UPLOAD_DEADLINE_FACTOR
        first, stream, _ = await self.caller.open_stream(
            "Download", lambda ch, _t: FileServiceStub(ch).download(request, timeout=timeout))
        if first.info is None:
            await stream.aclose()  # type: ignore[attr-defined]
            raise Internal("download did not start with file info")
        return first.info, _data(stream)


async def _data(parts: AsyncIterator[DownloadResponse]) -> AsyncIterator[bytes]:
    async with aclosing(parts):  # type: ignore[type-var]
        try:
            async for part in parts:
                if part.data:
                    yield part.data
        except WIRE_ERRORS as exc:
            raise from_grpc(exc) from None
