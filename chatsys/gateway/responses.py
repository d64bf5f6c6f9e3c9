"""Contract errors rendered for HTTP — the single place a :class:`ChatError` becomes a status."""

from __future__ import annotations

import json

from quart import Response

from chatsys.errors import ChatError


def error_response(exc: ChatError) -> Response:
    """``{"error": {"code", "message"}}`` with the code's status; also for refused upgrades."""
    body = json.dumps({"error": exc.as_dict()}, ensure_ascii=False)
    response = Response(body, status=exc.http_status, content_type="application/json")
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="chatsys"'
    return response
