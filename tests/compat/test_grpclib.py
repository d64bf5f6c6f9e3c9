"""chatsys.compat.grpclib: the grpclib behaviour it corrects and the private names it relies
on, checked on grpclib itself.

If grpclib changes how its wrapper wakes a blocked task, or renames or reshapes what the compat
module reaches into, these tests fail and the compat module must be revisited (see its
docstring).
"""

from __future__ import annotations

import ast
import asyncio
import socket
from pathlib import Path
from typing import ClassVar

import anyio
import grpclib
import pytest
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError
from grpclib.protocol import H2Protocol
from grpclib.utils import Wrapper
from h2.settings import SettingCodes

from chatsys.chat import wire
from chatsys.compat import grpclib as compat
from chatsys.stubs.chatsys.chat.v1 import ChatServiceBase, HistoryRequest, HistoryResponse
from chatsys.stubs.chatsys.chat.v1 import chat_pb2 as pb

pytestmark = pytest.mark.anyio


def test_the_installed_grpclib_is_one_the_fix_was_written_for() -> None:
    assert grpclib.__version__ in compat.SUPPORTED
    assert Wrapper.cancel is compat._cancel and Wrapper.__exit__ is compat._exit


async def _blocked_until_the_wrapper_fails(wrapper: Wrapper) -> None:
    with pytest.raises(StreamTerminatedError):
        with wrapper:
            await anyio.sleep_forever()


async def test_a_task_woken_by_the_wrapper_keeps_no_cancellation_request() -> None:
    wrapper = Wrapper()
    async with anyio.create_task_group() as tg:
        task: list[asyncio.Task[object]] = []

        async def blocked() -> None:
            task.append(asyncio.current_task())  # type: ignore[arg-type]
            await _blocked_until_the_wrapper_fails(wrapper)
            assert task[0].cancelling() == 0
            # A cancel scope cancelled later in the same task swallows its own cancellation.
            with anyio.CancelScope() as scope:
                scope.cancel()
                await anyio.sleep(1)
            assert scope.cancelled_caught

        tg.start_soon(blocked)
        await anyio.wait_all_tasks_blocked()
        wrapper.cancel(StreamTerminatedError("Connection lost"))


async def test_an_outer_cancellation_still_wins() -> None:
    """A scope cancelled at the same moment as the wrapper still ends the task."""
    wrapper = Wrapper()
    with anyio.CancelScope() as outer:
        async def cancel_both() -> None:
            await anyio.wait_all_tasks_blocked()
            outer.cancel()
            wrapper.cancel(StreamTerminatedError("Connection lost"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_both)
            try:
                with wrapper:
                    await anyio.sleep_forever()
            except StreamTerminatedError:
                await anyio.sleep_forever()  # the scope's cancellation comes again here
    assert outer.cancelled_caught


# The private names chatsys.compat.grpclib reaches into, checked on a real server and channel.

class _Recording(H2Protocol):
    made: ClassVar[list[H2Protocol]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.made.append(self)


class _ServerProtocol(_Recording):
    made: ClassVar[list[H2Protocol]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        compat.advertise_settings(self, {SettingCodes.MAX_CONCURRENT_STREAMS: 4321})


class _ClientProtocol(_Recording):
    made: ClassVar[list[H2Protocol]] = []


class _Server(compat.ProtocolServer):
    protocol = _ServerProtocol


class _Channel(compat.ProtocolChannel):
    protocol = _ClientProtocol


class _Chat(ChatServiceBase):
    async def history(self, message: HistoryRequest) -> HistoryResponse:
        return HistoryResponse()


async def test_protocol_classes_settings_and_a_server_on_our_own_socket() -> None:
    """Both factories make our protocol; the server still registers and closes its handlers
    (a call is answered); advertised SETTINGS reach the client's h2 connection."""
    server = _Server([_Chat()])
    sock = socket.create_server(("127.0.0.1", 0))
    await server.start(sock=sock)
    channel = _Channel("127.0.0.1", sock.getsockname()[1])
    try:
        with anyio.fail_after(5):
            reply = await wire.HISTORY.call(channel, pb.HistoryRequest(room="r"), seconds=5)
        assert list(reply.messages) == []
        assert len(_ServerProtocol.made) == 1 and len(_ClientProtocol.made) == 1
        client_h2 = _ClientProtocol.made[0].connection._connection
        assert client_h2.remote_settings.max_concurrent_streams == 4321
    finally:
        channel.close()
        server.close()
        with anyio.fail_after(5):
            await server.wait_closed()


async def test_keepalive_options_are_configuration_fields() -> None:
    config = compat.keepalive_configuration(4.0)
    assert config._keepalive_time == 4.0 and config._keepalive_timeout == 4.0
    assert config._keepalive_permit_without_calls is True
    assert config._http2_max_pings_without_data == 0
    assert config._http2_min_sent_ping_interval_without_data == 2.0
    Channel("127.0.0.1", 1, config=config).close()  # accepted by a channel


def test_reflection_in_both_versions_takes_names_and_a_pool() -> None:
    """Read from grpclib's sources, not imported: its reflection messages cannot share a process
    with grpcio's, which tests/runtime/test_grpc_health_reflection.py uses (that test also
    checks both versions end to end, against a real server)."""
    package = Path(grpclib.__file__).parent / "reflection"
    for module in ("service.py", "_deprecated.py"):
        tree = ast.parse((package / module).read_text())
        classes = [node for node in tree.body
                   if isinstance(node, ast.ClassDef) and node.name == "ServerReflection"]
        assert len(classes) == 1, module
        init = next(node for node in classes[0].body
                    if isinstance(node, ast.FunctionDef) and node.name == "__init__")
        assert [arg.arg for arg in init.args.kwonlyargs] == ["_service_names", "_pool"], module


def test_service_name_of_a_servicer() -> None:
    assert compat.service_name(_Chat()) == "chatsys.chat.v1.ChatService"
