"""CoalescingTransport: what one loop iteration writes leaves in one write, in order, and a
close never drops what was written before it. (Every gRPC test exercises it end to end: the
gateway's channels and A's server write through it.)"""

from __future__ import annotations

import asyncio

from chatsys.runtime.h2_writes import CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def _next_iteration() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_one_iteration_is_one_write_in_order() -> None:
    async def main() -> None:
        raw = RecordingTransport()
        transport = CoalescingTransport(raw)
        transport.write(b"headers")
        transport.write(b"")
        transport.write(bytearray(b"-data"))
        transport.write(b"-trailers")
        assert raw.writes == []
        assert transport.get_write_buffer_size() == len(b"headers-data-trailers")
        await _next_iteration()
        assert raw.writes == [b"headers-data-trailers"]
        transport.write(b"next")
        await _next_iteration()
        assert raw.writes == [b"headers-data-trailers", b"next"]
        assert transport.get_extra_info("peername") == "info:peername"

    asyncio.run(main())


def test_close_sends_what_was_written_first_and_nothing_after() -> None:
    async def main() -> None:
        raw = RecordingTransport()
        transport = CoalescingTransport(raw)
        transport.write(b"last trailers")
        transport.write(b"+goaway")
        transport.close()
        assert raw.writes == [b"last trailers+goaway"] and raw.closed
        transport.write(b"late")
        await _next_iteration()  # the scheduled flush finds the transport closing
        assert raw.writes == [b"last trailers+goaway"]

    asyncio.run(main())
