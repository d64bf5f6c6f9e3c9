"""Two B replicas on one --data-dir (what a ReadWriteMany volume gives them), over real gRPC.

Concurrent uploads through both replicas are each readable, complete and identical through
the other one; a replica that starts (and cleans the temp directory) while the other is in
the middle of an upload does not disturb that upload; nothing half-written is ever left.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from grpclib.client import Channel

from chatsys.stubs.chatsys.files.v1 import (
    DownloadRequest,
    FileInfo,
    FileServiceStub,
    StatRequest,
    UploadMeta,
    UploadRequest,
)
from tests.grpc_services import Service, start

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
CHUNK = 32 * 1024


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    data = tmp_path_factory.mktemp("shared") / "data"
    with start(["files"], data) as b1, start(["files"], data) as b2:
        yield b1, b2


async def _parts(data: bytes, gate: anyio.Event | None = None) -> AsyncIterator[UploadRequest]:
    yield UploadRequest(meta=UploadMeta(name="f.bin", room="lobby", owner="ana",
                                        content_type="application/octet-stream"))
    for i in range(0, len(data), CHUNK):
        if gate is not None and i >= len(data) // 2:
            await gate.wait()  # hold the upload open half-way
        yield UploadRequest(data=data[i:i + CHUNK])


async def _download(port: int, file_id: str) -> tuple[FileInfo, bytes]:
    ch = Channel("127.0.0.1", port)
    try:
        replies = [r async for r in FileServiceStub(ch).download(DownloadRequest(id=file_id),
                                                                 timeout=30)]
    finally:
        ch.close()
    assert replies[0].info is not None
    return replies[0].info, b"".join(r.data or b"" for r in replies[1:])


async def test_concurrent_uploads_on_both_replicas_read_back_on_the_other(
        replicas: tuple[Service, Service]) -> None:
    b1, b2 = replicas
    blobs = [os.urandom(100_000 + i * 7_919) for i in range(12)]
    stored: list[tuple[int, FileInfo]] = []

    async def upload(i: int) -> None:
        via = (b1, b2)[i % 2]
        ch = Channel("127.0.0.1", via.port)
        try:
            reply = await FileServiceStub(ch).upload(_parts(blobs[i]), timeout=30)
        finally:
            ch.close()
        assert reply.info is not None
        stored.append((i, reply.info))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(len(blobs)):
                tg.start_soon(upload, i)
        assert len({info.id for _, info in stored}) == len(blobs)
        for i, info in stored:
            other = (b2, b1)[i % 2]  # read through the replica that did not write it
            got_info, data = await _download(other.port, info.id)
            assert data == blobs[i] and got_info.sha256 == hashlib.sha256(blobs[i]).hexdigest()
            assert got_info.size == len(blobs[i])
    files_dir = b1.data_dir / "files"
    assert not list((files_dir / "tmp").iterdir())  # no temp file left behind
    assert len(list(files_dir.glob("*/*.json"))) >= len(blobs)


async def test_a_replica_starting_mid_upload_leaves_it_alone(
        replicas: tuple[Service, Service], tmp_path: Path) -> None:
    b1, _ = replicas
    blob = os.urandom(400_000)
    gate, done = anyio.Event(), anyio.Event()
    result: list[FileInfo] = []

    async def upload() -> None:
        ch = Channel("127.0.0.1", b1.port)
        try:
            reply = await FileServiceStub(ch).upload(_parts(blob, gate), timeout=60)
        finally:
            ch.close()
        assert reply.info is not None
        result.append(reply.info)
        done.set()

    tmp_dir = b1.data_dir / "files" / "tmp"

    def part_written() -> bool:
        return any(p.stat().st_size > 0 for p in tmp_dir.glob("*.part") if p != stale)

    # What a crashed upload leaves behind, two hours ago: a starting replica removes that.
    stale = tmp_dir / f"{'0' * 32}.part"
    stale.write_bytes(b"interrupted")
    os.utime(stale, (stale.stat().st_atime - 7200, stale.stat().st_mtime - 7200))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(upload)
            while True:  # until the upload is on disk, half done (files have no events)
                if part_written():
                    break
                await anyio.sleep(0.02)
            # A third replica starts on the same directory: its start-up cleanup runs now.
            with start(["files"], b1.data_dir) as b3:
                ch = Channel("127.0.0.1", b3.port)
                try:
                    assert not stale.exists()  # b3's start-up cleanup has run
                    gate.set()
                    await done.wait()
                    info = (await FileServiceStub(ch).stat(StatRequest(id=result[0].id))).info
                finally:
                    ch.close()
                assert info is not None and info.size == len(blob)
                _, data = await _download(b3.port, result[0].id)
                assert data == blob
