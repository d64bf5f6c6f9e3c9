"""Contract errors rendered for HTTP — the single place a :class:`ChatError` becomes a status."""

from __future__ import annotations

import json

from quart import Response

from chatsys.errors import ChatError, for_http_status


def error_parts(exc: ChatError) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of ``{"error": {"code", "message"}}`` with the code's status:
    a Quart response (:func:`error_response`) or a refused upgrade (the chat socket's)."""
    headers = {"content-type": "application/json"}
    if exc.http_status == 401:
        headers["www-authenticate"] = 'Bearer realm="chatsys"'
    body = json.dumps({"error": exc.as_dict()}, ensure_ascii=False).encode()
    return exc.http_status, headers, body


def error_response(exc: ChatError) -> Response:
    status, headers, body = error_parts(exc)
    return Response(body, status=status, headers=headers)


def server_error_response(status: int, description: str) -> Response:
    """A refusal by the HTTP framework itself (no such route, method not allowed), in the same
    JSON shape, keeping the framework's status."""
    response = error_response(for_http_status(status)(description))
    response.status_code = status
    return response
