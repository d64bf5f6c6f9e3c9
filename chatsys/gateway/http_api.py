"""HTTP routes: file upload/download, health, readiness, metrics and the chat page."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

from quart import Blueprint, Response, current_app, request

from chatsys import validation
from chatsys.errors import (
    BadRequest,
    ChatError,
    Forbidden,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from chatsys.gateway import metrics as m
from chatsys.gateway.multipart import read_file_part
from chatsys.gateway.responses import error_response
from chatsys.gateway.state import Gateway
from chatsys.runtime import metrics as runtime_metrics
from chatsys.stubs.chatsys.files.v1 import FileInfo, UploadMeta
from chatsys.stubs.chatsys.users.v1.users_pb2 import Session
from chatsys.tokens import MAX_TOKEN_CHARS

bp = Blueprint("http", __name__)
STATIC = Path(__file__).parent / "static"
DISCARD_LIMIT = 64 * 1024 * 1024


def _gateway() -> Gateway:
    return current_app.extensions["chatsys"]  # type: ignore[no-any-return]


def _json(obj: object, status: int = 200) -> Response:
    return Response(json.dumps(obj, ensure_ascii=False), status=status,
                    content_type="application/json")


async def _session_from_bearer() -> Session:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("invalid token")
    return await _gateway().auth.authenticate(token.strip())


def file_json(info: FileInfo) -> dict[str, object]:
    return {"id": info.id, "name": info.name, "size": info.size, "sha256": info.sha256,
            "content_type": info.content_type, "url": f"/api/files/{info.id}"}


@bp.post("/api/files")
async def upload() -> Response:
    try:
        info = await _store_upload(_gateway())
    except ChatError:
        # Refused (auth, room, size, format): read what the client is still sending so it gets
        # our JSON error rather than a reset connection.
        await _discard_body(DISCARD_LIMIT)
        raise
    m.FILE_BYTES.labels("upload").inc(info.size)
    return _json(file_json(info), 201)


async def _store_upload(gateway: Gateway) -> FileInfo:
    room = validation.room_name(request.args.get("room"))
    session = await _session_from_bearer()
    if session.room != room:
        raise Forbidden("this token belongs to another room")
    limit = gateway.settings.max_file_bytes
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise TooLarge(f"file is larger than {limit} bytes")
    part = await read_file_part(request.headers.get("Content-Type"), request.body, limit)
    meta = UploadMeta(name=part.filename, content_type=part.content_type, room=room,
                      owner=session.id, max_size=limit)
    return await gateway.files.upload(meta, part.chunks)


async def _discard_body(limit: int) -> None:
    """Read (and drop) what the client is still sending, so it can read our 413 instead of a
    reset connection; a client that keeps sending past ``limit`` is cut off."""
    seen = 0
    with suppress(Exception):
        async for chunk in request.body:
            seen += len(chunk)
            if seen > limit:
                break


def content_disposition(name: str) -> str:
    """``attachment`` always, with an ASCII fallback and the exact name in RFC 5987 form."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_"
                       for c in name) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@bp.get("/api/files/<file_id>")
async def download(file_id: str) -> Response:
    session = await _session_from_bearer()
    if len(file_id) > 64:
        raise BadRequest("invalid file id")
    info, data = await _gateway().files.download(file_id)
    if info.room != session.room:
        await data.aclose()  # type: ignore[attr-defined]
        raise Forbidden("this file belongs to another room")

    async def body() -> AsyncIterator[bytes]:
        async for chunk in data:
            m.FILE_BYTES.labels("download").inc(len(chunk))
            yield chunk

    response = Response(body(), content_type=info.content_type or "application/octet-stream")
    response.headers["Content-Length"] = str(info.size)
    response.headers["Content-Disposition"] = content_disposition(info.name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


@bp.get("/readyz")
async def readyz() -> Response:
    gateway = _gateway()
    if gateway.draining:
        return error_response(Unavailable("draining"))
    if not gateway.tasks.ready:
        return error_response(Unavailable(f"restarting: {', '.join(gateway.tasks.down)}"))
    if not await gateway.backends_ready():
        return error_response(Unavailable("module A or B is unreachable"))
    return _json({"status": "ready"})


@bp.get("/metrics")
async def metrics() -> Response:
    body, content_type = runtime_metrics.exposition()
    return Response(body, content_type=content_type)


# The web page: a fixed set of files (nothing else under static/ is reachable), revalidated on
# every load, under a CSP that runs only this origin's script and refuses HTML sinks.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    **{f"{module}.js": "text/javascript; charset=utf-8"  # ES modules need a JavaScript type
       for module in ("main", "dom", "errors", "files", "render", "rules", "socket", "state")},
    "style.css": "text/css; charset=utf-8",
}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'; require-trusted-types-for 'script'")


def _asset(name: str) -> Response:
    response = Response((STATIC / name).read_bytes(), content_type=ASSETS[name])
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@bp.get("/")
async def index() -> Response:
    return _asset("index.html")


@bp.get("/static/<name>")
async def static_asset(name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise NotFound("no such file")
    return _asset(name)
