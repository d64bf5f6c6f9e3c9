"""Each contract error code maps once to gRPC, HTTP and back."""

from __future__ import annotations

import pytest
import redis.exceptions
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from chatsys import errors
from chatsys.runtime import rpc

CASES = [
    (errors.BadRequest, "bad_request", 400, Status.INVALID_ARGUMENT),
    (errors.Unauthorized, "unauthorized", 401, Status.UNAUTHENTICATED),
    (errors.Forbidden, "forbidden", 403, Status.PERMISSION_DENIED),
    (errors.NotFound, "not_found", 404, Status.NOT_FOUND),
    (errors.TooLarge, "too_large", 413, Status.OUT_OF_RANGE),
    (errors.RateLimited, "rate_limited", 429, Status.RESOURCE_EXHAUSTED),
    (errors.Unavailable, "unavailable", 503, Status.UNAVAILABLE),
    (errors.StoreFailed, "unavailable", 503, Status.ABORTED),  # may be stored: not retried
    (errors.Internal, "internal", 500, Status.INTERNAL),
]


@pytest.mark.parametrize(("cls", "code", "http", "status"), CASES)
def test_round_trip(cls: type[errors.ChatError], code: str, http: int, status: Status) -> None:
    exc = cls("why")
    assert exc.code == code and exc.http_status == http and exc.as_dict()["message"] == "why"
    grpc = errors.to_grpc(exc)
    assert grpc.status == status
    back = errors.from_grpc(grpc)
    assert type(back) is cls


@pytest.mark.parametrize("wire", [StreamTerminatedError("reset"), ConnectionRefusedError(),
                                  TimeoutError(), GRPCError(Status.DEADLINE_EXCEEDED)])
def test_wire_failures_are_unavailable(wire: Exception) -> None:
    assert isinstance(errors.from_grpc(wire), errors.Unavailable)  # type: ignore[arg-type]


def test_unknown_status_is_internal() -> None:
    assert isinstance(errors.from_grpc(GRPCError(Status.DATA_LOSS, "x")), errors.Internal)


@pytest.mark.parametrize("outage", [ConnectionRefusedError(), redis.exceptions.ConnectionError(),
                                    redis.exceptions.TimeoutError()])
async def test_a_storage_outage_in_a_servicer_is_store_failed(outage: Exception) -> None:
    @rpc.unary
    async def handler() -> None:
        raise outage

    with pytest.raises(GRPCError) as info:
        await handler()
    assert info.value.status is Status.ABORTED
    assert isinstance(errors.from_grpc(info.value), errors.StoreFailed)


async def test_a_bug_in_a_servicer_is_internal() -> None:
    @rpc.unary
    async def handler() -> None:
        raise KeyError("bug")

    with pytest.raises(GRPCError) as info:
        await handler()
    assert info.value.status is Status.INTERNAL


def test_from_status_takes_a_status_number_as_an_outcome_carries_it() -> None:
    assert type(errors.from_status(Status.NOT_FOUND.value, "gone")) is errors.NotFound
    assert errors.from_status(Status.NOT_FOUND.value, "gone").message == "gone"
    assert type(errors.from_status(Status.ABORTED.value, "")) is errors.StoreFailed
    assert type(errors.from_status(999, "what")) is errors.Internal
    # Whatever the server said, a backend that is down reads the same to the client.
    assert errors.from_status(Status.UNAVAILABLE, "queue full").message == errors.BACKEND_DOWN


def test_one_type_per_contract_code() -> None:
    codes = [cls.code for cls in errors.CONTRACT_ERRORS]
    assert len(codes) == len(set(codes))
    assert errors.StoreFailed.code == errors.Unavailable.code  # a wire status, not a new code


@pytest.mark.parametrize(("status", "cls"), [
    (404, errors.NotFound), (413, errors.TooLarge), (405, errors.BadRequest),
    (408, errors.BadRequest), (500, errors.Internal), (502, errors.Internal)])
def test_a_status_the_http_server_chose(status: int, cls: type[errors.ChatError]) -> None:
    assert errors.for_http_status(status) is cls
