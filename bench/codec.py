"""The protobuf codec on the message path: upb (what chatsys runs) against betterproto2.

Every chat message costs protobuf work on both sides of gRPC: the gateway encodes its
``AppendRequest`` into an ``AppendBatchRequest`` and decodes the ``RoomEvent`` that brings the
message back for the fan-out; A does the reverse. Since ``9d0f981``/``e5316dc`` both sides use
the generated ``chat_pb2`` messages (Google's ``protobuf`` runtime, upb, in C); before, they used
betterproto2's, which run in pure Python and stay what the users and files services use. This
keeps the measurement behind that change. Prints one line per operation with the ratio, then one
JSON line.

    python -m bench.codec            # about 20 s
    python -m bench.codec --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from chatsys.stubs.chatsys.chat.v1 import (
    AppendBatchRequest,
    AppendRequest,
    Message,
    RoomEvent,
)
from chatsys.stubs.chatsys.chat.v1 import chat_pb2 as pb

BATCH = 4  # a typical AppendBatch size near the knee (see docs/performance.md)


def _time(fn: Callable[[], Any], seconds: float) -> float:
    """µs per call: the best of three runs of about ``seconds`` / 3 each."""
    n, spent = 1, 0.0
    while spent < 0.01:  # calibrate
        started = time.perf_counter()
        for _ in range(n):
            fn()
        spent = time.perf_counter() - started
        n *= 2
    calls = max(1, int(n / 2 * (seconds / 3) / spent))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def measure(seconds: float) -> dict[str, Any]:
    fields = {"room": "r12", "user": "u123", "session": "ef7b14614a17ac9d4a7741fb4cf4b124"}
    message = Message(id="0000000000001234", ts=1795716652902, text="m 3.1.12345", **fields)
    event = bytes(RoomEvent(message=message))

    def bp_decode() -> Any:
        got = RoomEvent.parse(event).message
        return got.id, got.room, got.user, got.session, got.ts, got.text

    def upb_decode() -> Any:
        got = pb.RoomEvent.FromString(event).message
        return got.id, got.room, got.user, got.session, got.ts, got.text

    def bp_encode() -> bytes:
        return bytes(AppendBatchRequest(appends=[AppendRequest(text="m 1.2.3", **fields)
                                                 for _ in range(BATCH)]))

    def upb_encode() -> bytes:
        return pb.AppendBatchRequest(appends=[pb.AppendRequest(text="m 1.2.3", **fields)
                                              for _ in range(BATCH)]).SerializeToString()

    assert bp_encode() == upb_encode() and bp_decode() == upb_decode()  # the same bytes
    batch = bp_encode()

    def bp_parse_batch() -> Any:
        return [a.text for a in AppendBatchRequest.parse(batch).appends]

    def upb_parse_batch() -> Any:
        return [a.text for a in pb.AppendBatchRequest.FromString(batch).appends]

    rows = {}
    for name, ours, ref in (
            ("decode RoomEvent (gateway, per message)", bp_decode, upb_decode),
            (f"build + encode AppendBatchRequest of {BATCH} (gateway, per batch)",
             bp_encode, upb_encode),
            (f"decode AppendBatchRequest of {BATCH} (A, per batch)",
             bp_parse_batch, upb_parse_batch)):
        rows[name] = {"betterproto2_us": round(_time(ours, seconds), 2),
                      "upb_us": round(_time(ref, seconds), 2)}
        rows[name]["ratio"] = round(rows[name]["betterproto2_us"] / rows[name]["upb_us"], 1)
    return {"batch": BATCH, "ops": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fraction of a second per op")
    args = parser.parse_args(argv)
    result = measure(0.15 if args.quick else 3.0)
    for name, row in result["ops"].items():
        print(f"{name:62s} betterproto2 {row['betterproto2_us']:8.2f} µs   "
              f"upb {row['upb_us']:6.2f} µs   x{row['ratio']}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
