"""Request smuggling through `ferrocorn balance` (issue 19): the balancer refuses the whole
matrix of test_smuggling.py before anything reaches an upstream, what it does forward can be
read only one way, and an upstream's ambiguous or surplus response never reaches a client as
the answer to another request.

The upstream is tests/recording_upstream.py: a strict origin that keeps every byte it
receives and records as a violation anything a careful server could read two ways (both
framing headers, a repeated or odd length, a hop-by-hop header, a bare LF...).
"""

from __future__ import annotations

import time

import pytest

from conftest import ferrocorn_cmd
from recording_upstream import RecordingUpstream
from test_smuggling import CASES, post
from wire import Conn, exchange, parse_responses


@pytest.fixture(scope="module")
def upstream():
    rec = RecordingUpstream()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def balancer(module_server, upstream):
    return module_server(
        None, "-w", 1, "--upstream", f"127.0.0.1:{upstream.port}",
        cmd=ferrocorn_cmd() + ["balance"],
    )


@pytest.fixture
def rec(upstream):
    upstream.reset()
    return upstream


@pytest.mark.parametrize("name", list(CASES))
def test_the_matrix_is_refused_by_the_balancer_and_nothing_reaches_the_upstream(balancer, rec, name):
    raw, status = CASES[name]
    data, closed = exchange(balancer.port, raw, shutdown=False, timeout=5)
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [status], f"{name}: {data[:400]!r}"
    assert closed, f"{name}: the connection stayed open after {status}"
    assert rec.bytes_received() == 0, f"{name}: the upstream received {rec.raw!r}"


def forwarded(balancer, rec, raw: bytes, count: int):
    """Send ``raw`` on one connection, read ``count`` responses; the requests the upstream
    parsed, after checking it found nothing ambiguous."""
    with Conn(balancer.port) as conn:
        conn.send(raw)
        statuses = [conn.read_response().status for _ in range(count)]
    assert statuses == [200] * count, statuses
    assert rec.violations == [], rec.raw
    return rec.requests


def only(received, name):
    values = received.header_all(name)
    assert len(values) == 1, (name, received.headers)
    return values[0]


def test_a_chunked_body_with_extensions_and_trailers_goes_on_as_plain_chunked(balancer, rec):
    body = b"3;ext=1;q=\"a b\"\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    [got] = forwarded(balancer, rec, post(b"Transfer-Encoding: chunked\r\n", body), 1)
    assert (got.framing, got.body) == ("chunked", b"abcde")
    assert got.header_all("Content-Length") == []
    assert b";ext" not in b"".join(rec.raw), "chunk extensions are the client's hop only"


@pytest.mark.parametrize("framing", [b"Content-Length", b"Transfer-Encoding", b"Host"])
def test_a_connection_header_cannot_strip_the_framing_or_the_host(balancer, rec, framing):
    body, headers = b"hello", b"Content-Length: 5\r\n"
    if framing == b"Transfer-Encoding":
        body, headers = b"5\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"
    raw = post(b"Connection: " + framing + b"\r\n" + headers, body)
    follow = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
    got = forwarded(balancer, rec, raw + follow, 2)
    assert [(r.method, r.target, r.body) for r in got] == [("POST", "/front", b"hello"), ("GET", "/after", b"")]
    assert only(got[0], "Host") == "x"


def test_pipelined_requests_arrive_as_the_same_requests(balancer, rec):
    raw = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
           + post(b"Content-Length: 3\r\n", b"abc")
           + b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
           + b"GET /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    got = forwarded(balancer, rec, raw, 4)
    assert [(r.method, r.target, r.framing, r.body) for r in got] == [
        ("GET", "/a", "none", b""),
        ("POST", "/front", "length", b"abc"),
        ("PUT", "/c", "chunked", b"z"),
        ("GET", "/d", "length", b"hi"),
    ]


def test_an_http10_body_and_a_transfer_coding_chain_are_reframed_once(balancer, rec):
    raw = b"POST /old HTTP/1.0\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
    [got] = forwarded(balancer, rec, raw, 1)
    assert (got.framing, got.body, only(got, "Content-Length")) == ("length", b"body", "4")
    rec.reset()
    raw = post(b"Transfer-Encoding: gzip, chunked\r\n", b"4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n")
    [got] = forwarded(balancer, rec, raw, 1)
    assert (only(got, "Transfer-Encoding"), got.body) == ("gzip, chunked", b"\x1f\x8b\x08\x00")


def test_an_absolute_form_target_leaves_one_host(balancer, rec):
    raw = b"GET http://inner.example/p?q=1 HTTP/1.1\r\nHost: outer.example\r\n\r\n"
    [got] = forwarded(balancer, rec, raw, 1)
    assert (got.target, only(got, "Host")) == ("/p?q=1", "inner.example")


@pytest.mark.parametrize("path", ["/resp/cl-te", "/resp/two-cl"])
def test_an_ambiguous_upstream_response_is_a_502_and_the_next_request_is_answered_afresh(balancer, rec, path):
    with Conn(balancer.port) as conn:
        conn.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().status == 502
    with Conn(balancer.port) as conn:
        conn.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, b"ok")
    log = balancer.log_text()
    reason = "at the same time" if path == "/resp/cl-te" else "invalid Content-Length"
    assert reason in log and f"127.0.0.1:{rec.port}" in log, log[-600:]


def test_a_broken_upstream_body_is_a_502_before_the_head_went_out_and_a_cut_after(balancer, rec):
    data, closed = exchange(balancer.port, b"GET /resp/bad-chunk HTTP/1.1\r\nHost: x\r\n\r\n",
                            shutdown=False, timeout=5)
    [resp], _ = parse_responses(data)
    assert (resp.status, closed) == (502, True)
    # Once the head and a chunk went out, all that is left is to cut the client off: its
    # response ends without the last chunk, and nothing follows on that connection.
    data, closed = exchange(balancer.port, b"GET /resp/bad-chunk-late HTTP/1.1\r\nHost: x\r\n\r\n",
                            shutdown=False, timeout=5)
    assert closed, "the client is not left waiting for the rest"
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"2\r\nok\r\n"), data
    log = balancer.log_text()
    assert f"upstream 127.0.0.1:{rec.port} sent a broken response" in log
    assert f"response from upstream 127.0.0.1:{rec.port} cut short" in log
    with Conn(balancer.port) as conn:
        conn.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"ok"


@pytest.mark.parametrize("path", ["/resp/surplus", "/resp/late"])
def test_bytes_an_upstream_sends_unasked_never_answer_another_request(balancer, rec, path):
    with Conn(balancer.port) as conn:
        conn.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"ok"
        time.sleep(0.4)  # the late bytes arrive while the upstream connection sits idle
        for i in range(3):
            conn.send(b"GET /next%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            resp = conn.read_response()
            assert (resp.status, resp.body) == (200, b"ok"), f"request {i} got {resp.body!r}"
    assert [r.target for r in rec.requests] == [path, "/next0", "/next1", "/next2"]
