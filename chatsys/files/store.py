"""Files on a local (or shared ReadWriteMany) directory, written so nothing half-done is visible.

Layout under ``<data dir>/files``: ``ab/<id>`` holds the bytes and ``ab/<id>.json`` the
metadata, where ``ab`` is the first two hex digits of the id (keeps directories small). Bytes
stream into ``tmp/`` and are fsynced and renamed into place; the metadata is written the same
way *after* the bytes are durable, so a file exists exactly when its metadata does. All disk
work runs in worker threads, never on the event loop.

Several B replicas may share the directory: each file's metadata is its own small file (no
index, so no single writer), ids are 128 random bits and temp files are opened with ``x``
(exclusive), so two replicas never write the same path; readers only ever open renamed,
complete files; and start-up cleans only temp files too old to belong to a live upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import anyio

from chatsys.errors import TooLarge
from chatsys.runtime.settings import Settings

CHUNK = 64 * 1024
STALE_PART_SECONDS = 3600
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class FileRecord:
    id: str
    name: str
    size: int
    content_type: str
    room: str
    owner: str
    sha256: str
    created_ms: int


def valid_id(file_id: str) -> bool:
    return bool(_ID.fullmatch(file_id))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Upload:
    """One upload in progress: a temp file, its running hash, and the size limit."""

    def __init__(self, store: LocalFileStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.id = secrets.token_hex(16)
        self.size = 0
        self.hash = hashlib.sha256()
        self.tmp = store.tmp_dir / f"{self.id}.part"
        self._fh: IO[bytes] | None = None

    async def open(self) -> None:
        self._fh = await anyio.to_thread.run_sync(self.tmp.open, "xb")

    async def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            raise TooLarge(f"file is larger than {self.limit} bytes")
        self.size += len(data)
        self.hash.update(data)
        assert self._fh is not None
        await anyio.to_thread.run_sync(self._fh.write, data)

    async def commit(self, name: str, content_type: str, room: str, owner: str,
                     created_ms: int) -> FileRecord:
        record = FileRecord(self.id, name, self.size, content_type, room, owner,
                            self.hash.hexdigest(), created_ms)
        await anyio.to_thread.run_sync(self._commit, record)
        return record

    def _commit(self, record: FileRecord) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        final = self.store.data_path(self.id)
        self.store.ensure_dir(final.parent)
        os.replace(self.tmp, final)
        # The bytes' directory entry must be durable before the metadata that announces them.
        _fsync_dir(final.parent)
        meta_tmp = self.store.tmp_dir / f"{self.id}.json.part"
        with meta_tmp.open("x", encoding="utf-8") as fh:
            json.dump(asdict(record), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(meta_tmp, self.store.meta_path(self.id))
        _fsync_dir(final.parent)

    async def abort(self) -> None:
        def remove() -> None:
            if self._fh is not None:
                self._fh.close()
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(remove)


class LocalFileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"

    @classmethod
    async def open(cls, data_dir: Path) -> LocalFileStore:
        store = cls(data_dir / "files")
        await anyio.to_thread.run_sync(store._prepare)
        return store

    def _prepare(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        # Leftovers of uploads a crash interrupted were never visible: drop them. Only old ones,
        # since other replicas sharing this directory may be writing theirs right now.
        cutoff = time.time() - STALE_PART_SECONDS
        for part in self.tmp_dir.glob("*.part"):
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def ensure_dir(self, path: Path) -> None:
        """Create a shard directory durably (another replica may be creating it too)."""
        if path.is_dir():
            return
        path.mkdir(parents=True, exist_ok=True)
        _fsync_dir(path.parent)

    def data_path(self, file_id: str) -> Path:
        return self.root / file_id[:2] / file_id

    def meta_path(self, file_id: str) -> Path:
        return self.root / file_id[:2] / f"{file_id}.json"

    async def begin(self, limit: int) -> Upload:
        upload = Upload(self, limit)
        await upload.open()
        return upload

    async def stat(self, file_id: str) -> FileRecord | None:
        if not valid_id(file_id):
            return None

        def read() -> FileRecord | None:
            try:
                text = self.meta_path(file_id).read_text(encoding="utf-8")
                return FileRecord(**json.loads(text))
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(read)

    async def open_data(self, file_id: str) -> IO[bytes] | None:
        def open_() -> IO[bytes] | None:
            try:
                return self.data_path(file_id).open("rb")
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(open_)

    async def ping(self) -> None:
        """Ready when the directory is there and writable (a lost volume mount fails this)."""
        def check() -> None:
            if not os.access(self.tmp_dir, os.W_OK):
                raise OSError(f"{self.tmp_dir} is not writable")

        await anyio.to_thread.run_sync(check)

    async def aclose(self) -> None:
        """Nothing is buffered: every upload is fsynced before it is acknowledged."""


async def open_file_store(settings: Settings) -> LocalFileStore:
    return await LocalFileStore.open(settings.data_dir)
