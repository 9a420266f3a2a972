"""``--access-log-json``: one JSON object per line, keys named after the format's atoms."""

from __future__ import annotations

import json

from apps.obs.obshelpers import start, wait_workers
from conftest import wait_for_file
from wire import Conn, request_bytes

DEFAULT_KEYS = {"remote_addr", "ident", "user", "time", "request", "status", "bytes", "referer", "user_agent"}


def test_access_log_json_lines(server, tmp_path):
    log = tmp_path / "access.log"
    srv = start(server, "--access-logfile", log, "--access-log-json", workers=1, metrics=False)
    wait_workers(srv, 1)
    with Conn(srv.port) as c:
        c.send(request_bytes("GET", "/", headers=[("User-Agent", 'ua "quoted"/1.0')]))
        assert c.read_response().status == 200
        c.send(request_bytes("GET", "/missing?x=1&y=%22", headers=[("Referer", "http://ref.example/")]))
        assert c.read_response().status == 404
        c.send(request_bytes("GET", "/error", headers=[("Connection", "close")]))
        assert c.read_response().status == 500
    text = wait_for_file(log, 5, lambda t: t.count("\n") >= 3)
    assert text is not None, "no access log written"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 3, text
    entries = [json.loads(ln) for ln in lines]
    for e in entries:
        assert isinstance(e, dict)
        assert set(e) == DEFAULT_KEYS, sorted(e)
        assert e["remote_addr"] == "127.0.0.1"
    assert [str(e["status"]) for e in entries] == ["200", "404", "500"]
    assert entries[0]["request"] == "GET / HTTP/1.1"
    assert entries[0]["user_agent"] == 'ua "quoted"/1.0'
    assert entries[1]["request"] == "GET /missing?x=1&y=%22 HTTP/1.1"
    assert entries[1]["referer"] == "http://ref.example/"
    assert entries[0]["referer"] == "-"


def test_access_log_json_custom_format_keys(server, tmp_path):
    log = tmp_path / "access.log"
    srv = start(
        server,
        "--access-logfile", log,
        "--access-log-json",
        "--access-logformat", "%(h)s %(m)s %(U)s %(q)s %(s)s",
        workers=1,
        metrics=False,
    )
    wait_workers(srv, 1)
    with Conn(srv.port) as c:
        c.send(request_bytes("GET", "/missing?a=b", headers=[("Connection", "close")]))
        assert c.read_response().status == 404
    text = wait_for_file(log, 5)
    assert text, "no access log written"
    e = json.loads(text.splitlines()[0])
    assert str(e.get("status")) == "404", e
    assert e.get("remote_addr") == "127.0.0.1", e
    assert "GET" in e.values() and "/missing" in e.values() and "a=b" in e.values(), e
    assert len(e) == 5, e
