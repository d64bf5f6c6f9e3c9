"""The gateway's Quart app: the HTTP routes, errors rendered once, HTTP metrics. (The chat
WebSocket is served without Quart: :mod:`chatsys.gateway.transport`, :mod:`chatsys.gateway.ws`.)
"""

from __future__ import annotations

import time

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from chatsys.errors import ChatError
from chatsys.gateway import http_api
from chatsys.gateway import metrics as m
from chatsys.gateway.responses import error_response, server_error_response
from chatsys.gateway.state import Gateway


def create_app(gateway: Gateway) -> Quart:
    # static_folder=None: the page's files are served by http_api, with their own headers.
    app = Quart("chatsys.gateway", static_folder=None)
    app.extensions["chatsys"] = gateway
    # The gateway counts upload bytes itself, streaming; Quart's checks would buffer or refuse.
    app.config.update(MAX_CONTENT_LENGTH=None, BODY_TIMEOUT=120, RESPONSE_TIMEOUT=300,
                      PROVIDE_AUTOMATIC_OPTIONS=True)
    app.register_blueprint(http_api.bp)

    @app.errorhandler(ChatError)
    async def on_chat_error(exc: ChatError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def on_http_error(exc: HTTPException) -> Response:
        return server_error_response(exc.code or 500, exc.description or exc.name)

    @app.before_request
    async def stamp() -> None:
        request.scope["chatsys.started"] = time.perf_counter()

    @app.after_request
    async def observe(response: Response) -> Response:
        started = request.scope.get("chatsys.started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            m.HTTP_REQUEST_SECONDS.labels(route, request.method, str(response.status_code)) \
                .observe(time.perf_counter() - started)
        return response

    return app
