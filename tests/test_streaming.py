"""Streamed responses from every worker class, checked over real sockets: many small chunks
arrive whole and in order to a client that reads slowly at first (the app's side must wait for
room and be woken, not lose the wake-up), a client that stops reading holds the app back
(bounded memory), and an app failing mid-stream with chunks still queued cuts the response
short instead of ending it as if complete.

App: ``tests/apps/streams.py`` (WSGI ``app``, ASGI ``asgi_app``).
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from conftest import wait_for_file
from wire import Conn, request_bytes

CLASSES = {
    "sync": ("streams:app", []),
    "gthread": ("streams:app", ["-k", "gthread", "--threads", "4"]),
    "gevent": ("streams:app", ["-k", "gevent"]),
    "asgi": ("streams:asgi_app", ["-k", "asgi"]),
}


def start(server, kind, state_dir=None):
    app, args = CLASSES[kind]
    env = ["-e", f"STATE_DIR={state_dir}"] if state_dir else []
    return server(app, "-w", "1", *args, *env)


def expected_body(n, size):
    return b"".join(f"{i:08d}".encode().ljust(size, b".") for i in range(n))


def dechunk(data):
    """Decode a chunked body; returns (body, whether the terminating chunk was seen)."""
    body = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return bytes(body), False
        length = int(data[pos:end].split(b";")[0], 16)
        if length == 0:
            return bytes(body), True
        body += data[end + 2:end + 2 + length]
        pos = end + 2 + length + 2


def open_stream(srv, path, receive_buffer, timeout):
    """A connection that asked for ``path`` with a small receive buffer (so the server's side
    fills up soon) and read the response head; returns it and the body bytes read so far."""
    conn = Conn(srv.port, timeout=timeout)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    conn.send(request_bytes("GET", path))
    conn.read_until(b"\r\n\r\n", timeout=10)
    head, _, rest = conn.buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert b"transfer-encoding: chunked" in head.lower()
    return conn, bytearray(rest)


def read_rest(conn, data, timeout, slow_until=0):
    """Read until the terminating chunk, the end of the connection or ``timeout``; pause 2 ms
    between reads while fewer than ``slow_until`` bytes have come (a slow reader)."""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
        try:
            got = conn.sock.recv(1 << 16)
        except ConnectionResetError:
            got = b""
        if not got:
            break
        data += got
        if len(data) < slow_until:
            time.sleep(0.002)
    return dechunk(bytes(data))


@pytest.mark.parametrize("kind", list(CLASSES))
def test_many_small_chunks_reach_a_slow_then_fast_reader_whole_and_in_order(server, kind):
    n, size = 20000, 1024
    srv = start(server, kind)
    c, data = open_stream(srv, f"/stream?n={n}&size={size}", 32768, 60)
    with c:
        # slow for the first MiB: the app's queue fills and it must wait, then be woken
        body, complete = read_rest(c, data, 60, slow_until=1 << 20)
    assert complete, f"no terminating chunk after {len(body)} of {n * size} bytes"
    assert body == expected_body(n, size)
    assert requests.get(srv.url + "/stream?n=3&size=10", timeout=10).content == expected_body(3, 10)


@pytest.mark.parametrize("kind", list(CLASSES))
def test_a_client_that_stops_reading_holds_the_app_back(server, state_dir, kind):
    n, size = 65536, 1024  # 64 MiB
    srv = start(server, kind, state_dir)
    produced_file = state_dir / "produced"
    c, data = open_stream(srv, f"/stream?n={n}&size={size}", 65536, 60)
    with c:
        assert wait_for_file(produced_file, timeout=10) is not None
        time.sleep(1.0)  # the client reads nothing: the app must stop producing
        stalled = int(produced_file.read_text())
        time.sleep(0.5)
        assert int(produced_file.read_text()) == stalled, "the app kept producing for nobody"
        # the server's queue plus the socket buffers, not the 64 MiB stream
        assert stalled < 16 << 20, f"{stalled} bytes produced while the client read nothing"
        body, complete = read_rest(c, data, 60)
    assert complete and len(body) == n * size
    assert body[-size:] == expected_body(n, size)[-size:]
    assert int(produced_file.read_text()) == n * size


@pytest.mark.parametrize("kind", list(CLASSES))
def test_an_app_failing_mid_stream_with_chunks_queued_cuts_the_response_short(server, kind):
    n, size = 2000, 1024
    srv = start(server, kind)
    c, data = open_stream(srv, f"/fail?n={n}&size={size}", 32768, 30)
    with c:
        time.sleep(0.5)  # the app fills the queue and fails while its chunks still wait
        body, complete = read_rest(c, data, 30)
    assert not complete, "a failed stream must not end with the terminating chunk"
    assert body == expected_body(n, size)[: len(body)]
    srv.wait_log(r"stream failed on purpose")
    assert requests.get(srv.url + "/stream?n=3&size=10", timeout=10).content == expected_body(3, 10)
