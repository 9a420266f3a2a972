"""HTTP/1.x wire behaviour: persistence, pipelining, HEAD, 100-continue, framing, timeouts, headers."""

import email.utils
import time
from datetime import datetime, timezone

import httpx
import pytest
import requests

from wire import Conn, exchange, parse_responses, request_bytes

HOP_BY_HOP = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailers",
    "proxy-authenticate",
    "proxy-authorization",
]


@pytest.fixture(scope="module")
def feat(module_server, tmp_path_factory):
    state = tmp_path_factory.mktemp("http1-state")
    srv = module_server("features:app", env={"STATE_DIR": str(state)})
    srv.state = state
    return srv


@pytest.fixture(scope="module")
def echo(module_server):
    return module_server("echo:app")


# --- persistence ---------------------------------------------------------------------------
def test_keep_alive_http11(feat):
    with Conn(feat.port) as c:
        for i in range(3):
            c.send(request_bytes("GET", f"/ka{i}"))
            r = c.read_response()
            assert r.status == 200 and r.body == f"hello /ka{i}".encode()
            assert (r.header("Connection") or "").lower() != "close"
        assert not c.is_closed(0.3)


def test_connection_close_http11(feat):
    with Conn(feat.port) as c:
        c.send(request_bytes("GET", "/bye", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200
        assert r.header("Connection").lower() == "close"
        assert c.is_closed(3)


def test_http10_closes_by_default(feat):
    with Conn(feat.port) as c:
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.version == "HTTP/1.0"
        assert r.status == 200 and r.body == b"hello /old"
        assert c.is_closed(3)


def test_http10_keep_alive(feat):
    with Conn(feat.port) as c:
        c.send(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r1 = c.read_response()
        assert r1.version == "HTTP/1.0" and r1.body == b"hello /one"
        assert (r1.header("Connection") or "").lower() == "keep-alive"
        c.send(b"GET /two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r2 = c.read_response()
        assert r2.body == b"hello /two"


def test_keep_alive_idle_timeout_closes(server):
    srv = server("features:app", "--keep-alive", "1")
    with Conn(srv.port) as c:
        c.send(request_bytes("GET", "/x"))
        assert c.read_response().status == 200
        assert c.is_closed(6), "idle keep-alive connection was not closed after --keep-alive 1"


def test_keep_alive_default_survives_short_idle(feat):
    with Conn(feat.port) as c:
        c.send(request_bytes("GET", "/x"))
        assert c.read_response().status == 200
        time.sleep(0.5)
        c.send(request_bytes("GET", "/y"))
        assert c.read_response().body == b"hello /y"


# --- pipelining ----------------------------------------------------------------------------
def test_pipelined_responses_in_order(feat):
    reqs = b"".join(request_bytes("GET", f"/p{i}") for i in range(5))
    reqs += request_bytes("GET", "/last", headers=[("Connection", "close")])
    data, closed = exchange(feat.port, reqs, shutdown=False)
    assert closed
    resps, rest = parse_responses(data)
    assert [r.body for r in resps] == [f"hello /p{i}".encode() for i in range(5)] + [b"hello /last"]
    assert rest == b""


def test_pipelined_with_bodies_and_unread_body(feat):
    reqs = (
        request_bytes("POST", "/readbody", body=b"first")
        + request_bytes("POST", "/read_partial", body=b"0123456789")
        + request_bytes(
            "POST",
            "/readbody",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        + request_bytes("GET", "/end", headers=[("Connection", "close")])
    )
    data, closed = exchange(feat.port, reqs, shutdown=False)
    resps, _ = parse_responses(data)
    assert [r.body for r in resps] == [b"read:first", b"01", b"read:abcde", b"hello /end"]


def test_nothing_after_connection_close_is_processed(feat):
    reqs = request_bytes("GET", "/first", headers=[("Connection", "close")]) + request_bytes("GET", "/ignored")
    data, closed = exchange(feat.port, reqs, shutdown=False)
    resps, rest = parse_responses(data)
    assert closed and [r.body for r in resps] == [b"hello /first"] and rest == b""


def test_unread_chunked_body_is_drained(feat):
    reqs = request_bytes(
        "POST", "/noread", headers=[("Transfer-Encoding", "chunked")], body=b"4\r\nGET \r\n3\r\n/x \r\n0\r\n\r\n"
    ) + request_bytes("GET", "/after-chunked", headers=[("Connection", "close")])
    data, _ = exchange(feat.port, reqs, shutdown=False)
    resps, _ = parse_responses(data)
    assert [r.body for r in resps] == [b"did not read body", b"hello /after-chunked"]


def test_pipelined_slow_then_fast_keeps_order(feat):
    reqs = request_bytes("GET", "/slow?delay=0.5") + request_bytes("GET", "/fast", headers=[("Connection", "close")])
    data, _ = exchange(feat.port, reqs, shutdown=False, timeout=10)
    resps, _ = parse_responses(data)
    assert [r.body for r in resps] == [b"slow done", b"hello /fast"]


# --- HEAD ----------------------------------------------------------------------------------
def test_head_same_headers_no_body(feat):
    data, _ = exchange(
        feat.port,
        request_bytes("HEAD", "/list_body")
        + request_bytes("GET", "/list_body", headers=[("Connection", "close")]),
        shutdown=False,
    )
    resps, rest = parse_responses(data, methods=["HEAD", "GET"])
    assert len(resps) == 2 and rest == b"", data
    head, get = resps
    assert head.status == get.status == 200
    assert head.body == b"" and get.body == b"hello list body"
    assert head.header("Content-Length") == get.header("Content-Length") == "15"
    assert head.header("Content-Type") == get.header("Content-Type")


def test_head_streaming_route_has_no_body(feat):
    data, _ = exchange(
        feat.port,
        request_bytes("HEAD", "/stream?n=3")
        + request_bytes("GET", "/after-head", headers=[("Connection", "close")]),
        shutdown=False,
    )
    resps, rest = parse_responses(data, methods=["HEAD", "GET"])
    assert [r.status for r in resps] == [200, 200], data
    assert resps[1].body == b"hello /after-head"
    assert rest == b""


# --- Expect: 100-continue -----------------------------------------------------------------
def test_100_continue_sent_when_app_reads(feat):
    with Conn(feat.port) as c:
        c.send(
            b"POST /readbody HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        buf = c.read_until(b"\r\n\r\n", timeout=5)
        assert buf.startswith(b"HTTP/1.1 100 Continue\r\n"), buf
        c.buf = c.buf[c.buf.index(b"\r\n\r\n") + 4 :]
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.body == b"read:hello"


def test_no_100_continue_when_app_does_not_read(feat):
    with Conn(feat.port) as c:
        c.send(b"POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        buf = c.read_until(b"\r\n\r\n", timeout=5)
        assert buf.startswith(b"HTTP/1.1 200 "), buf
        assert b"100 Continue" not in buf
        r = c.read_response(interim=True)
        assert r.status == 200 and r.body == b"did not read body"


def test_100_continue_ignored_for_http10(feat):
    data, _ = exchange(
        feat.port,
        b"POST /readbody HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    )
    assert data.startswith(b"HTTP/1.0 200 "), data[:100]
    assert b" 100 " not in data.split(b"\r\n", 1)[0]
    resps, _ = parse_responses(data)
    assert resps[0].body == b"read:abc"


def test_unknown_expectation_is_417(feat):
    data, closed = exchange(feat.port, b"GET /noread HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n")
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [417]
    assert closed


def test_100_continue_with_requests_client(feat):
    r = requests.post(feat.url + "/readbody", data=b"payload", headers={"Expect": "100-continue"}, timeout=5)
    assert r.status_code == 200 and r.content == b"read:payload"


# --- request bodies ------------------------------------------------------------------------
def test_chunked_request_body_is_dechunked(echo):
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    with Conn(echo.port) as c:
        c.send(request_bytes("POST", "/c", headers=[("Transfer-Encoding", "chunked")], body=body))
        env = c.read_response().json()
    import base64

    assert base64.b64decode(env["_body_b64"]) == b"hello world"
    assert "CONTENT_LENGTH" not in env
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert env["wsgi.input_terminated"] is True


def test_chunked_upload_with_httpx(feat):
    def gen():
        for i in range(20):
            yield f"part{i};".encode()

    with httpx.Client(timeout=5) as client:
        r = client.post(feat.url + "/readbody", content=gen())
    assert r.status_code == 200
    assert r.content == b"read:" + b"".join(f"part{i};".encode() for i in range(20))


def test_large_body_roundtrip(feat):
    payload = bytes(range(256)) * 4096  # 1 MiB
    r = requests.post(feat.url + "/readbody", data=payload, timeout=10)
    assert r.status_code == 200 and r.content == b"read:" + payload


# --- response framing ----------------------------------------------------------------------
def _one(port, raw):
    data, _ = exchange(port, raw)
    resps, rest = parse_responses(data)
    assert len(resps) == 1, data[:500]
    return resps[0]


def test_list_body_gets_content_length(feat):
    r = _one(feat.port, request_bytes("GET", "/list_body", headers=[("Connection", "close")]))
    assert r.framing == "length" and r.header("Content-Length") == "15"
    assert not r.has_header("Transfer-Encoding")
    assert r.body == b"hello list body"


def test_generator_http11_is_chunked(feat):
    r = _one(feat.port, request_bytes("GET", "/stream?n=4", headers=[("Connection", "close")]))
    assert r.framing == "chunked" and not r.has_header("Content-Length")
    assert r.body == b"chunk0;chunk1;chunk2;chunk3;"


def test_empty_yields_do_not_terminate_chunked_body(feat):
    r = _one(feat.port, request_bytes("GET", "/empty_chunks", headers=[("Connection", "close")]))
    assert r.framing == "chunked" and r.body == b"ab"


def test_generator_http10_is_close_delimited(feat):
    data, closed = exchange(feat.port, b"GET /stream?n=3 HTTP/1.0\r\n\r\n")
    assert closed
    resps, _ = parse_responses(data)
    r = resps[0]
    assert r.version == "HTTP/1.0"
    assert not r.has_header("Transfer-Encoding") and not r.has_header("Content-Length")
    assert r.framing == "close" and r.body == b"chunk0;chunk1;chunk2;"


def test_app_content_length_is_used(feat):
    r = _one(feat.port, request_bytes("GET", "/stream_with_length", headers=[("Connection", "close")]))
    assert r.framing == "length" and r.header("Content-Length") == "9" and r.body == b"abcdefghi"


def test_write_callable_then_iterable_order(feat):
    r = _one(feat.port, request_bytes("GET", "/write", headers=[("Connection", "close")]))
    assert r.status == 200
    assert r.body == b"written-1;written-2;iter-1;iter-2"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(feat, code):
    data, _ = exchange(
        feat.port,
        request_bytes("GET", f"/status?code={code}")
        + request_bytes("GET", "/next", headers=[("Connection", "close")]),
        shutdown=False,
    )
    resps, rest = parse_responses(data)
    assert [r.status for r in resps] == [code, 200], data
    assert not resps[0].has_header("Transfer-Encoding")
    assert resps[1].body == b"hello /next" and rest == b""


def test_app_content_length_caps_body(feat):
    data, _ = exchange(
        feat.port,
        request_bytes("GET", "/cl_overflow") + request_bytes("GET", "/next", headers=[("Connection", "close")]),
        shutdown=False,
    )
    assert b"/smuggled" not in data
    resps, rest = parse_responses(data)
    assert resps[0].status == 200 and resps[0].body == b"hello"
    # either the connection is closed after the over-long body, or the next response follows cleanly
    assert [r.body for r in resps[1:]] in ([], [b"hello /next"]), data
    assert rest == b""


@pytest.mark.parametrize("code", [204, 304])
def test_body_dropped_for_no_body_status(feat, code):
    data, _ = exchange(
        feat.port,
        request_bytes("GET", f"/body_on_no_body_status?code={code}")
        + request_bytes("GET", "/next", headers=[("Connection", "close")]),
        shutdown=False,
    )
    assert b"must not reach the wire" not in data
    resps, rest = parse_responses(data)
    assert [r.status for r in resps] == [code, 200] and rest == b"", data


def test_streaming_delivers_first_chunk_early(feat):
    with Conn(feat.port, timeout=10) as c:
        c.send(request_bytes("GET", "/stream?n=3&delay=1.5"))
        first = c.read_until(b"chunk0;", timeout=5)
        assert b"chunk0;" in first and b"chunk2;" not in first
        r = c.read_response(timeout=10)
        assert r.body == b"chunk0;chunk1;chunk2;"


# --- header-read timeout -------------------------------------------------------------------
def test_header_timeout_closes_slow_client(server):
    srv = server("features:app", "--header-timeout", "1")
    slow = Conn(srv.port, timeout=8)
    try:
        slow.send(b"GET /slowloris HT")
        # other clients are served meanwhile
        for i in range(3):
            assert requests.get(srv.url + f"/other{i}", timeout=5).text == f"hello /other{i}"
            time.sleep(0.2)
        time.sleep(1.5)
        assert slow.is_closed(4), "connection trickling its head was not closed by --header-timeout 1"
        assert b"hello /slowloris" not in slow.buf
    finally:
        slow.close()


def test_header_timeout_applies_to_trickled_headers(server):
    srv = server("features:app", "--header-timeout", "1")
    with Conn(srv.port, timeout=8) as c:
        closed = False
        for piece in [b"GET /trickle HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n"]:
            try:
                c.send(piece)
            except OSError:
                closed = True
                break
            time.sleep(0.6)
        assert closed or c.is_closed(3)
        assert b"hello /trickle" not in c.buf


# --- server-generated and hop-by-hop headers ------------------------------------------------
def test_server_and_date_headers(feat):
    r = requests.get(feat.url + "/hdr", timeout=5)
    server_hdr = r.headers["Server"]
    assert server_hdr.startswith("ferrocorn") and "gunicorn" not in server_hdr.lower()
    date = email.utils.parsedate_to_datetime(r.headers["Date"])
    assert abs((datetime.now(timezone.utc) - date).total_seconds()) < 300
    assert r.headers["Date"].endswith("GMT")


def test_hop_by_hop_headers_from_app_are_dropped(feat):
    data, _ = exchange(
        feat.port,
        request_bytes("GET", "/hop_by_hop") + request_bytes("GET", "/after", headers=[("Connection", "close")]),
        shutdown=False,
    )
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [200, 200], data
    r = resps[0]
    assert r.body == b"hop" and resps[1].body == b"hello /after"
    names = [k.lower() for k, _ in r.headers]
    for h in ("keep-alive", "upgrade", "te", "trailers", "proxy-authenticate", "proxy-authorization"):
        assert h not in names, f"{h} leaked: {r.headers}"
    assert "close-not-really" not in (r.header("Connection") or "")
    assert r.header_all("Transfer-Encoding") == []
    servers = r.header_all("Server")
    assert len(servers) == 1 and servers[0].startswith("ferrocorn"), servers
    assert len(r.header_all("Date")) == 1 and "1970" not in r.header("Date")
    assert r.header("X-Custom") == "kept"


def test_repeated_response_headers_preserved(feat):
    r = _one(feat.port, request_bytes("GET", "/multi_headers", headers=[("Connection", "close")]))
    assert r.header_all("Set-Cookie") == ["a=1", "b=2"]


def test_reason_phrase_passed_through(feat):
    r = _one(feat.port, request_bytes("GET", "/status?code=418", headers=[("Connection", "close")]))
    assert r.status == 418 and r.reason == "I'm a teapot"


def test_real_clients_keepalive(feat):
    with requests.Session() as s:
        bodies = [s.get(feat.url + f"/s{i}", timeout=5).text for i in range(5)]
    assert bodies == [f"hello /s{i}" for i in range(5)]
    with httpx.Client(timeout=5) as client:
        rs = [client.get(feat.url + f"/h{i}") for i in range(5)]
    assert [r.text for r in rs] == [f"hello /h{i}" for i in range(5)]
    assert all(r.http_version == "HTTP/1.1" for r in rs)
