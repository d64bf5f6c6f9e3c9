"""Module B (FileService) as a real process, over gRPC."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

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


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with start(["files"], tmp_path_factory.mktemp("b") / "data", "--max-file-bytes=300000") as svc:
        yield svc


@pytest.fixture
async def files(service: Service) -> AsyncIterator[FileServiceStub]:
    ch = Channel("127.0.0.1", service.port)
    yield FileServiceStub(ch)
    ch.close()


def _requests(meta: UploadMeta | None, data: bytes, chunk: int = 50_000) -> list[UploadRequest]:
    parts = [UploadRequest(meta=meta)] if meta is not None else []
    parts += [UploadRequest(data=data[i:i + chunk]) for i in range(0, len(data), chunk)]
    return parts


async def upload(files: FileServiceStub, data: bytes, **meta: object) -> FileInfo:
    fields = {"name": "a.bin", "room": "lobby", "owner": "ana", **meta}
    resp = await files.upload(_requests(UploadMeta(**fields), data))  # type: ignore[arg-type]
    assert resp.info is not None
    return resp.info


async def download(files: FileServiceStub, file_id: str) -> tuple[FileInfo, list[bytes]]:
    replies = [r async for r in files.download(DownloadRequest(id=file_id))]
    assert replies[0].info is not None and all(r.data is not None for r in replies[1:])
    return replies[0].info, [r.data for r in replies[1:] if r.data is not None]


def _status(exc: pytest.ExceptionInfo[GRPCError]) -> Status:
    return exc.value.status


async def test_upload_download_roundtrip(files: FileServiceStub) -> None:
    data = os.urandom(200_000)
    with anyio.fail_after(10):
        info = await upload(files, data, content_type="image/png", name="photo.png")
        assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
        assert info.name == "photo.png" and info.content_type == "image/png"
        assert info.room == "lobby" and info.owner == "ana" and len(info.id) == 32
        got_info, chunks = await download(files, info.id)
        assert got_info.id == info.id and got_info.sha256 == info.sha256
        assert len(chunks) > 1 and max(len(c) for c in chunks) <= 64 * 1024
        assert b"".join(chunks) == data
        stat = await files.stat(StatRequest(id=info.id))
        assert stat.info is not None and stat.info.size == len(data)


async def test_empty_file_and_odd_content_type(files: FileServiceStub) -> None:
    with anyio.fail_after(5):
        info = await upload(files, b"", content_type="not a type", name="")
        assert info.size == 0 and info.name == "file"
        assert info.content_type == "application/octet-stream"
        assert info.sha256 == hashlib.sha256(b"").hexdigest()


async def test_too_large(files: FileServiceStub, service: Service) -> None:
    with anyio.fail_after(10):
        with pytest.raises(GRPCError) as exc:
            await upload(files, os.urandom(300_001))
        assert _status(exc) is Status.OUT_OF_RANGE
        with pytest.raises(GRPCError) as exc:
            await upload(files, os.urandom(2000), max_size=1000)
        assert _status(exc) is Status.OUT_OF_RANGE
        assert (await upload(files, os.urandom(1000), max_size=1000)).size == 1000
    leftovers = list((service.data_dir / "files" / "tmp").iterdir())
    assert leftovers == []


async def test_missing_meta_and_bad_room(files: FileServiceStub) -> None:
    with anyio.fail_after(5):
        with pytest.raises(GRPCError) as exc:
            await files.upload(_requests(None, b"data"))
        assert _status(exc) is Status.INVALID_ARGUMENT
        with pytest.raises(GRPCError) as exc:
            await files.upload([])
        assert _status(exc) is Status.INVALID_ARGUMENT
        with pytest.raises(GRPCError) as exc:
            await upload(files, b"x", room="../etc")
        assert _status(exc) is Status.INVALID_ARGUMENT


async def test_traversal_names_sanitised(files: FileServiceStub, service: Service) -> None:
    with anyio.fail_after(5):
        for name, expected in [("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
                               ("/abs/x\x00y\n.txt", "xy.txt"), ("..", "file"),
                               ("n" * 400, "n" * 255)]:
            info = await upload(files, b"payload", name=name)
            assert info.name == expected
            stored = list(service.data_dir.rglob(info.id))
            assert len(stored) == 1
            assert stored[0].resolve().is_relative_to(service.data_dir.resolve())
    assert not (service.data_dir.parent / "passwd").exists()


async def test_unknown_ids_not_found(files: FileServiceStub) -> None:
    with anyio.fail_after(5):
        for file_id in ["0" * 32, "../../chatsys.db", "", "ZZ"]:
            with pytest.raises(GRPCError) as exc:
                await download(files, file_id)
            assert _status(exc) is Status.NOT_FOUND
            with pytest.raises(GRPCError) as exc:
                await files.stat(StatRequest(id=file_id))
            assert _status(exc) is Status.NOT_FOUND


async def test_files_survive_restart(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    with start(["files"], tmp_path / "data") as svc:
        ch = Channel("127.0.0.1", svc.port)
        try:
            with anyio.fail_after(10):
                info = await upload(FileServiceStub(ch), data)
        finally:
            ch.close()
    with start(["files"], tmp_path / "data") as svc:
        ch = Channel("127.0.0.1", svc.port)
        try:
            with anyio.fail_after(10):
                got, chunks = await download(FileServiceStub(ch), info.id)
            assert got.sha256 == info.sha256 and b"".join(chunks) == data
        finally:
            ch.close()
