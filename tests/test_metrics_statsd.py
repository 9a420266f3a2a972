"""statsd datagrams (``--statsd-host``) received by a UDP socket bound in the test."""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from apps.obs.obshelpers import get, start, wait_workers

LINE_RE = re.compile(r"^(?P<name>[^:|]+):(?P<value>-?[0-9.]+)\|(?P<type>c|g|ms|h|s)(?:\|@[0-9.]+)?(?:\|#(?P<tags>\S+))?$")


@pytest.fixture
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        yield s
    finally:
        s.close()


class Collector:
    def __init__(self, sock):
        self.sock = sock
        self.lines: list[str] = []

    def drain(self, seconds=0.3):
        """Read datagrams until none arrives for ``seconds``."""
        self.sock.settimeout(seconds)
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return self.lines
            self.lines.extend(ln for ln in data.decode("utf-8", "replace").split("\n") if ln)

    def wait_for(self, pred, timeout=10.0, msg="statsd lines"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain(0.2)
            if pred(self.lines):
                return self.lines
        raise AssertionError(f"{msg} not received within {timeout}s; got {self.lines}")

    def parsed(self):
        out = []
        for ln in self.lines:
            m = LINE_RE.match(ln)
            assert m, f"malformed statsd line {ln!r}"
            out.append(m.groupdict())
        return out


def count(lines, name, typ):
    return sum(1 for ln in lines if ln["name"] == name and ln["type"] == typ)


def test_statsd_per_request_and_worker_gauge(server, udp):
    port = udp.getsockname()[1]
    col = Collector(udp)
    srv = start(server, "--statsd-host", f"127.0.0.1:{port}", workers=2, metrics=False)
    wait_workers(srv, 2)
    col.wait_for(lambda ls: any(ln.startswith("gunicorn.workers:") for ln in ls), msg="workers gauge at start")
    plan = ["/", "/", "/missing", "/error", "/"]
    for p in plan:
        get(srv.port, p)
    col.wait_for(
        lambda ls: sum(ln.startswith("gunicorn.requests:") for ln in ls) >= len(plan)
        and sum(ln.startswith("gunicorn.request.duration:") for ln in ls) >= len(plan),
        msg="per-request metrics",
    )
    col.drain(0.5)
    lines = col.parsed()
    assert all(ln["tags"] is None for ln in lines), col.lines
    assert count(lines, "gunicorn.requests", "c") == len(plan)
    assert all(ln["value"] == "1" for ln in lines if ln["name"] == "gunicorn.requests")
    durations = [float(ln["value"]) for ln in lines if ln["name"] == "gunicorn.request.duration"]
    assert len(durations) == len(plan) and all(0 <= d < 5000 for d in durations), durations
    assert count(lines, "gunicorn.request.duration", "ms") == len(plan)
    assert count(lines, "gunicorn.request.status.200", "c") == 3
    assert count(lines, "gunicorn.request.status.404", "c") == 1
    assert count(lines, "gunicorn.request.status.500", "c") == 1
    gauges = [ln["value"] for ln in lines if ln["name"] == "gunicorn.workers"]
    assert gauges and all(ln["type"] == "g" for ln in lines if ln["name"] == "gunicorn.workers")
    assert gauges[-1] == "2", gauges
    # the master sends the gauge again when the worker count changes
    col.lines.clear()
    srv.send_signal(signal.SIGTTIN)
    col.wait_for(lambda ls: "gunicorn.workers:3|g" in ls, timeout=15, msg="gunicorn.workers:3|g after TTIN")


def test_statsd_prefix_and_dogstatsd_tags(server, udp):
    port = udp.getsockname()[1]
    col = Collector(udp)
    srv = start(
        server,
        "--statsd-host", f"127.0.0.1:{port}",
        "--statsd-prefix", "app",
        "--dogstatsd-tags", "env:test,team:web",
        workers=1,
        metrics=False,
    )
    wait_workers(srv, 1)
    get(srv.port, "/")
    get(srv.port, "/missing")
    col.wait_for(
        lambda ls: sum(ln.startswith("app.gunicorn.request.duration:") for ln in ls) >= 2
        and any(ln.startswith("app.gunicorn.workers:") for ln in ls),
        msg="prefixed metrics",
    )
    col.drain(0.3)
    lines = col.parsed()
    assert all(ln["name"].startswith("app.gunicorn.") for ln in lines), col.lines
    assert all(ln["tags"] == "env:test,team:web" for ln in lines), col.lines
    assert count(lines, "app.gunicorn.requests", "c") == 2
    assert count(lines, "app.gunicorn.request.status.200", "c") == 1
    assert count(lines, "app.gunicorn.request.status.404", "c") == 1
    assert "app.gunicorn.workers:1|g|#env:test,team:web" in col.lines
