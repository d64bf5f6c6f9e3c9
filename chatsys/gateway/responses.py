"""Contract errors rendered for HTTP — the single place a :class:`ChatError` becomes a status."""

from __future__ import annotations

import json

from quart import Response

from chatsys.errors import ChatError, for_http_status


def error_response(exc: ChatError) -> Response:
    """``{"error": {"code", "message"}}`` with the code's status; also for refused upgrades."""
    body = json.dumps({"error": exc.as_dict()}, ensure_ascii=False)
    response = Response(body, status=exc.http_status, content_type="application/json")
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="chatsys"'
    return response


def server_error_response(status: int, description: str) -> Response:
    """A refusal by the HTTP framework itself (no such route, method not allowed), in the same
    JSON shape, keeping the framework's status."""
    response = error_response(for_http_status(status)(description))
    response.status_code = status
    return response
