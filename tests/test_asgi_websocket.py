"""WebSocket over ASGI (``-k asgi``), driven by the ``websockets`` client.

Skipped until the server answers an upgrade request with ``101`` (capability probe below).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time

import pytest
import requests

from conftest import APPS_DIR, ServerFactory, wait_for_file

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

CLASSES = APPS_DIR / "classes"


def _probe_websocket() -> str | None:
    """None if the asgi worker upgrades a WebSocket request, else why not."""
    factory = ServerFactory()
    try:
        try:
            srv = factory("ws_app:app", "-k", "asgi", cwd=CLASSES)
        except AssertionError as exc:
            return f"asgi worker did not start: {str(exc)[:200]}"
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(req)
                head = b""
                deadline = time.monotonic() + 5
                while b"\r\n" not in head and time.monotonic() < deadline:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
        except OSError as exc:
            return f"upgrade request failed: {exc}"
        status = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        return None if " 101" in status else f"WebSocket not supported yet (upgrade answered {status!r})"
    finally:
        factory.stop_all()


_WHY_NOT = _probe_websocket()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")


@pytest.fixture(scope="module")
def ws_state(tmp_path_factory):
    return tmp_path_factory.mktemp("ws-state")


@pytest.fixture(scope="module")
def ws_srv(module_server, ws_state):
    return module_server("ws_app:app", "-k", "asgi", "-w", "1", "-e", f"STATE_DIR={ws_state}", cwd=CLASSES)


def ws_url(srv, path):
    return f"ws://127.0.0.1:{srv.port}{path}"


def ws_connect(srv, path, **kw):
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("proxy", None)
    return connect(ws_url(srv, path), **kw)


@pytest.mark.parametrize("compression", ["deflate", None])
def test_echo_500_text_messages_in_order(ws_srv, compression):
    with ws_connect(ws_srv, "/echo", compression=compression) as ws:
        sent = [f"message {i} " + "é" * (i % 7) for i in range(500)]
        for m in sent:
            ws.send(m)
        got = [ws.recv(timeout=10) for _ in sent]
    assert got == sent


def test_echo_500_binary_messages_in_order(ws_srv):
    with ws_connect(ws_srv, "/echo") as ws:
        sent = [os.urandom(i % 300) + i.to_bytes(4, "big") for i in range(500)]
        for m in sent:
            ws.send(m)
        got = [ws.recv(timeout=10) for _ in sent]
    assert all(isinstance(g, bytes) for g in got)
    assert got == sent


def test_interleaved_echo_and_a_large_message(ws_srv):
    with ws_connect(ws_srv, "/echo", max_size=None) as ws:
        for i in range(50):
            ws.send(f"ping {i}")
            assert ws.recv(timeout=5) == f"ping {i}"
        big = os.urandom(3 * 1024 * 1024)
        ws.send(big)
        assert ws.recv(timeout=20) == big


def test_http_still_served_next_to_websockets(ws_srv):
    with ws_connect(ws_srv, "/echo") as ws:
        ws.send("x")
        assert requests.get(f"http://127.0.0.1:{ws_srv.port}/", timeout=5).text == "http ok"
        assert ws.recv(timeout=5) == "x"


@pytest.mark.parametrize("code", [1000, 1001, 4001])
def test_server_close_code_and_reason_reach_the_client(ws_srv, code):
    with ws_connect(ws_srv, f"/close?code={code}") as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (code, "bye")


def test_client_close_code_reaches_the_app_as_websocket_disconnect(ws_srv, ws_state):
    with ws_connect(ws_srv, "/echo") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.close(code=4002, reason="client leaving")
    text = wait_for_file(ws_state / "ws", timeout=5, predicate=lambda t: "disconnect 4002" in t)
    assert text is not None and "disconnect 4002" in text, text


def test_client_vanishing_is_a_disconnect_too(ws_srv, ws_state):
    before = (ws_state / "ws").read_text() if (ws_state / "ws").exists() else ""
    with ws_connect(ws_srv, "/echo") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: abnormal closure
        ws.socket.close()
    text = wait_for_file(
        ws_state / "ws", timeout=5, predicate=lambda t: t.count("disconnect") > before.count("disconnect")
    )
    new = (text or "")[len(before) :]
    assert "disconnect 1006" in new, new


def test_close_before_accept_is_http_403(ws_srv):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_srv, "/deny")
    assert info.value.response.status_code == 403


def test_denial_response_extension(ws_srv):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_srv, "/deny-response")
    resp = info.value.response
    assert resp.status_code == 401
    assert resp.body == b"go away"
    assert resp.headers["content-type"] == "text/plain"


def test_subprotocol_negotiation_and_accept_headers(ws_srv):
    with ws_connect(ws_srv, "/subproto", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers["x-ws-extra"] == "yes"
        assert json.loads(ws.recv(timeout=5)) == ["chat.v1", "chat.v2"]


def test_no_subprotocol_when_none_chosen(ws_srv):
    with ws_connect(ws_srv, "/subproto", subprotocols=["other"]) as ws:
        assert ws.subprotocol is None
        assert json.loads(ws.recv(timeout=5)) == ["other"]


def test_websocket_scope(ws_srv):
    with ws_connect(ws_srv, "/scope?x=1", additional_headers={"X-Probe": "7"}) as ws:
        scope = json.loads(ws.recv(timeout=5))
    assert scope["type"] == "websocket"
    assert scope["path"] == "/scope"
    assert scope["query_string"] == "x=1"
    assert scope["scheme"] == "ws"
    assert dict(scope["headers"])["x-probe"] == "7"
    assert scope["subprotocols"] == []


def test_many_concurrent_websockets_in_one_worker(ws_srv):
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(ws_connect(ws_srv, "/echo")) for _ in range(50)]
        for i, ws in enumerate(conns):
            ws.send(f"c{i}")
        assert [ws.recv(timeout=10) for ws in conns] == [f"c{i}" for i in range(50)]


@pytest.mark.parametrize("fail", [False, True])
def test_a_burst_to_a_reader_that_pauses_arrives_whole_then_closes_with_the_apps_ending(ws_srv, ws_state, fail):
    # The app sends far more than the connection's queue holds while the client reads nothing,
    # so it must wait for room and be woken; then it returns (or raises) with the queue full.
    # Every message must arrive in order, then the close: 1000 for a normal return (not 1011,
    # which a lost close message turned it into), 1011 when the app raised.
    n, size = 6000, 2048  # 12 MiB: more than the socket buffers and the server's queue hold
    path = f"/burst?n={n}&size={size}" + ("&fail=1" if fail else "")
    with ws_connect(ws_srv, path, max_queue=4, compression=None) as ws:
        time.sleep(1.0)  # the client's own queue fills and it stops reading the socket
        got = [ws.recv(timeout=10) for _ in range(n)]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert got == [f"{i:08d}".ljust(size, ".") for i in range(n)]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == (1011 if fail else 1000)
    if fail:
        ws_srv.wait_log(r"burst failed on purpose")
