"""The contract's error codes, modelled once and mapped once per boundary.

Each code of the contract (docs/protocol.md) is one exception type (:data:`CONTRACT_ERRORS`).
Servicers raise them, :func:`to_grpc` turns them into a gRPC status at A and B,
:func:`from_status` turns a status back into the same type in the gateway (:func:`from_grpc` for
a failed call, whatever failed), and the gateway renders that type as a WebSocket error frame or
an HTTP status (``http_status``, also read backwards by :func:`for_http_status` for the HTTP
server's own refusals).
"""

from __future__ import annotations

from typing import ClassVar

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

BACKEND_DOWN = "a backend service is unavailable, try again"


class ChatError(Exception):
    """An expected failure that a client can act on."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[Status] = Status.INTERNAL

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.replace("_", " "))
        self.message = message or self.code.replace("_", " ")

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(ChatError):
    code = "bad_request"
    http_status = 400
    grpc_status = Status.INVALID_ARGUMENT


class Unauthorized(ChatError):
    code = "unauthorized"
    http_status = 401
    grpc_status = Status.UNAUTHENTICATED


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403
    grpc_status = Status.PERMISSION_DENIED


class NotFound(ChatError):
    code = "not_found"
    http_status = 404
    grpc_status = Status.NOT_FOUND


class TooLarge(ChatError):
    code = "too_large"
    http_status = 413
    grpc_status = Status.OUT_OF_RANGE


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429
    grpc_status = Status.RESOURCE_EXHAUSTED


class Unavailable(ChatError):
    code = "unavailable"
    http_status = 503
    grpc_status = Status.UNAVAILABLE


class StoreFailed(Unavailable):
    """The store failed during a write (Redis or the disk went away): the write may or may not
    have been kept.

    To a client this is a backend outage, ``unavailable``, as the contract names it (its code is
    Unavailable's, unchanged). Between the services it is not UNAVAILABLE, which promises that
    nothing was done and lets the gateway retry on another replica: retrying here could store a
    message twice, so it travels as ABORTED, which nothing retries.
    """

    grpc_status = Status.ABORTED


class Internal(ChatError):
    code = "internal"
    http_status = 500
    grpc_status = Status.INTERNAL


CONTRACT_ERRORS: tuple[type[ChatError], ...] = (
    BadRequest, Unauthorized, Forbidden, NotFound, TooLarge, RateLimited, Unavailable, Internal)

_BY_STATUS: dict[Status, type[ChatError]] = {cls.grpc_status: cls for cls in CONTRACT_ERRORS}
# A deadline that passes means the dependency is too slow to answer: to the client it is down.
_BY_STATUS[Status.DEADLINE_EXCEEDED] = Unavailable
_BY_STATUS[Status.CANCELLED] = Unavailable
_BY_STATUS[StoreFailed.grpc_status] = StoreFailed
_BY_HTTP_STATUS: dict[int, type[ChatError]] = {cls.http_status: cls for cls in CONTRACT_ERRORS}


def to_grpc(error: ChatError) -> GRPCError:
    return GRPCError(error.grpc_status, error.message)


def from_status(status: Status | int, message: str | None = None) -> ChatError:
    """The contract error a gRPC status stands for (a status number from a message too).

    A status that says the backend is down gets one message, whatever the server said."""
    if not isinstance(status, Status):
        try:
            status = Status(status)
        except ValueError:
            status = Status.UNKNOWN
    cls = _BY_STATUS.get(status, Internal)
    if cls is Unavailable:
        return Unavailable(BACKEND_DOWN)
    return cls(message or "")


def from_grpc(error: GRPCError | StreamTerminatedError | OSError | TimeoutError) -> ChatError:
    """The gateway's view of a failed call to A or B: its status, or else a backend outage."""
    if isinstance(error, GRPCError):
        return from_status(error.status, error.message)
    return Unavailable(BACKEND_DOWN)


def for_http_status(status: int) -> type[ChatError]:
    """The contract error of an HTTP status that the server, not chatsys, chose (a 404 for an
    unknown route, a 405): the code with that status, else ``bad_request`` or ``internal``."""
    return _BY_HTTP_STATUS.get(status, BadRequest if status < 500 else Internal)
