"""The HTTP servers behind the gateway, as clients that pool connections see them."""

from __future__ import annotations

import ast
import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from urllib3 import encode_multipart_formdata
from websockets.sync.client import connect

from tests.gateway_support import SERVERS, start_all

pytestmark = pytest.mark.slow
LOCUSTFILE = Path(__file__).parents[2] / "locustfiles" / "chat.py"
CONNECTIONS = 10


def lab_http_idle_limit() -> float:
    """``HTTP_IDLE_LIMIT`` of the Locust user: the longest it leaves an upload connection idle
    and still reuses it. Read from the source, since importing Locust monkey-patches the
    process for gevent."""
    for node in ast.parse(LOCUSTFILE.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "HTTP_IDLE_LIMIT":
            return float(ast.literal_eval(node.value))
    raise AssertionError(f"no HTTP_IDLE_LIMIT in {LOCUSTFILE}")


def upload(conn: http.client.HTTPConnection, room: str, token: str) -> int:
    """One 10 KB upload on ``conn`` as it is: no check that the server still has it open, as
    with a client that checked an instant before the server closed it."""
    body, content_type = encode_multipart_formdata(
        {"file": ("load.bin", b"x" * 10240, "application/octet-stream")})
    conn.request("POST", "/api/files?" + urlencode({"room": room}), body=body, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    return response.status


@pytest.mark.parametrize("server", SERVERS)
def test_a_pooled_connection_idle_as_long_as_lab_clients_allow_still_answers(
        tmp_path: Path, server: str) -> None:
    """The issue-19 failures: a POST on a reused keep-alive connection that the server closed
    as idle is dropped without a response, and no client may resend a POST. So the server keeps
    an idle connection open longer than the lab's users ever reuse one (--keep-alive-timeout
    above the Locust user's HTTP_IDLE_LIMIT), and each of these uploads gets its answer."""
    idle = lab_http_idle_limit() + 1.0
    with start_all(tmp_path / "data", tmp_path, server) as gateway, \
            connect(f"ws://127.0.0.1:{gateway.port}/ws/chat?user=pooled&room=idle") as ws:
        welcome = json.loads(ws.recv(timeout=10))
        token = welcome["token"]
        conns = [http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
                 for _ in range(CONNECTIONS)]
        try:
            assert [upload(conn, "idle", token) for conn in conns] == [201] * CONNECTIONS
            time.sleep(idle)  # every connection now idles as long as a lab user lets one idle
            assert [upload(conn, "idle", token) for conn in conns] == [201] * CONNECTIONS
        finally:
            for conn in conns:
                conn.close()
