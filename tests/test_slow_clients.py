"""Slow and idle clients never keep a one-worker sync server from answering a fresh client
within a second (issue 19), with the default settings:

- slowloris: many connections trickling their request heads (`--header-timeout`, 10 s, closes
  them; until then they cost the worker nothing);
- slow uploads: many connections sending their bodies a few bytes at a time (the body is read
  by the server before the app runs, so the app's one thread is never held by them);
- slow readers of a large response returned whole (written by the server after the app
  returned, the app slot already free);
- thousands of idle keep-alive connections.

Each test holds its slow clients open while a fresh client's request is timed; all of them are
closed at the end. Bounded: at most a few seconds each.
"""

import socket
import time

import pytest

from wire import Conn, parse_responses, request_bytes

FRESH_DEADLINE = 1.0


@pytest.fixture
def one_sync_worker(server):
    return server("slow_clients:app", "-w", "1", "-k", "sync")


def fresh_request_time(srv) -> float:
    """Seconds a fresh client waits for its whole answer (plain blocking socket: with
    thousands of sockets open, descriptors are past what select() takes)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(request_bytes("GET", "/fresh", headers=[("Connection", "close")]))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    elapsed = time.monotonic() - started
    resps, _ = parse_responses(data)
    assert resps and resps[0].body == b"hello /fresh", data[:200]
    return elapsed


def open_many(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            s.sendall(first_bytes)
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def test_slowloris_connections_do_not_hold_the_worker(one_sync_worker):
    socks = open_many(one_sync_worker.port, 300, b"GET /slow HTTP/1.1\r\nHost: x\r\nX-A: ")
    try:
        for s in socks[::3]:
            s.sendall(b"a")  # still trickling
        assert fresh_request_time(one_sync_worker) < FRESH_DEADLINE
    finally:
        close_all(socks)


def test_slow_uploads_do_not_hold_the_worker(one_sync_worker):
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    socks = open_many(one_sync_worker.port, 100, head + b"x" * 100)
    try:
        for s in socks:
            s.sendall(b"y" * 10)
        assert fresh_request_time(one_sync_worker) < FRESH_DEADLINE
        # an upload that does finish is still answered in full
        last = socks.pop()
        last.sendall(b"z" * (1000000 - 110))
        last.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got or not got.endswith(b"1000000"):
            chunk = last.recv(65536)
            if not chunk:
                break
            got += chunk
        last.close()
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"1000000"), got[:200]
    finally:
        close_all(socks)


def test_slow_readers_of_a_large_whole_response_do_not_hold_the_worker(one_sync_worker):
    request = request_bytes("GET", "/whole?size=8000000")
    socks = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", one_sync_worker.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            socks.append(s)  # and never read
        time.sleep(0.3)
        assert fresh_request_time(one_sync_worker) < FRESH_DEADLINE
        # a slow reader that does read gets the whole response
        with Conn(one_sync_worker.port, timeout=20) as c:
            c.send(request_bytes("GET", "/whole?size=8000000"))
            r = c.read_response(timeout=20)
            assert r.status == 200 and len(r.body) == 8000000
    finally:
        close_all(socks)


def test_thousands_of_idle_keep_alive_connections_do_not_hold_the_worker(one_sync_worker):
    socks = []
    try:
        for i in range(2000):
            s = socket.create_connection(("127.0.0.1", one_sync_worker.port), timeout=5)
            socks.append(s)
            if i % 10 == 0:  # every tenth has had a request answered, the rest never sent one
                s.sendall(request_bytes("GET", "/idle"))
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert fresh_request_time(one_sync_worker) < FRESH_DEADLINE
    finally:
        close_all(socks)
