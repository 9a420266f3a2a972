"""One TCP connection per request (``ab``, nginx's default HTTP/1.0 proxying) with several
workers: every worker serves, a worker over its share of connections waits for an event rather
than a timer, and a connection closes as soon as its last response is written."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from apps.obs.obshelpers import body_pid, metric_snapshot, start, value, wait_workers

pytest.importorskip("prometheus_client", reason="pip install prometheus_client (requirements-test.txt)")

CLASSES = {
    "sync": ("pid_apps:app", []),
    "gthread": ("pid_apps:app", ["-k", "gthread", "--threads", "4"]),
    "gevent": ("pid_apps:app", ["-k", "gevent"]),
    "asgi": ("pid_apps:asgi_app", ["-k", "asgi"]),
}

APPS_DIR = Path(__file__).resolve().parent / "apps"
CLIENTS = 16
REQUESTS_PER_CLIENT = 40


def http10_get(port: int) -> tuple[bytes, float]:
    """``GET /`` over HTTP/1.0 on a new connection, as ``ab`` sends it; returns the raw
    response (read to EOF) and how long the server took to close after the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"closed before a response: {data!r}"
            data += chunk
        answered = time.monotonic()
        while chunk := s.recv(65536):
            data += chunk
        return data, time.monotonic() - answered


@pytest.mark.parametrize("cls", list(CLASSES))
def test_every_worker_serves_short_connections_and_no_accept_waits_on_a_timer(server, cls):
    app, args = CLASSES[cls]
    srv = start(server, *args, workers=2, app=app, cwd=APPS_DIR)
    pids = set(wait_workers(srv, 2))

    def client(_):
        served = []
        for _ in range(REQUESTS_PER_CLIENT):
            raw, _ = http10_get(srv.port)
            assert raw.startswith(b"HTTP/1.0 200 "), raw[:200]
            served.append(body_pid(raw))
        return served

    with ThreadPoolExecutor(CLIENTS) as pool:
        served = [pid for part in pool.map(client, range(CLIENTS)) for pid in part]
    total = CLIENTS * REQUESTS_PER_CLIENT
    assert len(served) == total
    per_pid = {pid: served.count(pid) for pid in pids}
    assert set(served) <= pids, f"answered by unknown pids: {set(served) - pids}"
    # Both workers take part (with one request per connection a worker that counted its
    # closing connections as held would leave nearly all of them to its sibling).
    assert all(n >= total // 10 for n in per_pid.values()), per_pid
    snap = metric_snapshot(srv)
    assert value(snap, "ferrocorn_connections_total") >= total
    by_cause = {c: value(snap, "ferrocorn_accept_rechecks_total", cause=c)
                for c in ("event", "deadline", "fallback")}
    # A worker that left a connection to its sibling looked again when one of its own
    # requests or connections ended: never after sleeping on a timer (the hello app's requests
    # are never long, so the sync rules' deadline has nothing to wait for either).
    assert any(name == "ferrocorn_accept_rechecks_total" for name, _ in snap), "no recheck counts"
    assert by_cause["fallback"] + by_cause["deadline"] <= total // 200, by_cause


@pytest.mark.parametrize("cls", ["sync", "asgi"])
def test_http10_response_is_whole_and_the_connection_closes_at_once(server, cls):
    app, args = CLASSES[cls]
    srv = start(server, *args, workers=1, app=app, cwd=APPS_DIR, metrics=False)
    for _ in range(20):
        raw, close_after = http10_get(srv.port)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ") and body.startswith(b"pid="), raw
        fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
        assert int(fields[b"content-length"]) == len(body)
        # The server closes without waiting for the client's FIN (the client sends none
        # until it has read to EOF): well under the 1 s a lingering close would wait.
        assert close_after < 0.5, f"closed {close_after:.3f} s after the response"
