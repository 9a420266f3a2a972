"""Request-size limits, parse-error statuses, and the header_map policy for underscore names."""

import pytest

from wire import exchange, parse_responses, request_bytes


def calls(state_dir):
    f = state_dir / "calls.log"
    return f.read_text().splitlines() if f.exists() else []


@pytest.fixture
def echo_srv(server, state_dir):
    def start(*args):
        srv = server("echo:app", *args, env={"STATE_DIR": str(state_dir)})
        return srv

    return start


def send(srv, raw):
    data, closed = exchange(srv.port, raw)
    resps, _ = parse_responses(data)
    return resps, closed, data


def assert_error(srv, state_dir, raw, status):
    before = len(calls(state_dir))
    resps, closed, data = send(srv, raw)
    assert [r.status for r in resps] == [status], data[:300]
    assert resps[0].header("Connection", "").lower() == "close"
    assert closed, "server did not close the connection after an error response"
    assert len(calls(state_dir)) == before, "invalid request reached the app"
    return resps[0]


def assert_ok(srv, raw):
    resps, _, data = send(srv, raw)
    assert [r.status for r in resps] == [200], data[:300]
    return resps[0].json()


# --- request line ----------------------------------------------------------------------------
def test_request_line_default_limit(echo_srv, state_dir):
    srv = echo_srv()
    assert_ok(srv, request_bytes("GET", "/" + "a" * 4000))
    assert_error(srv, state_dir, request_bytes("GET", "/" + "a" * 5000), 414)


def test_request_line_custom_limit(echo_srv, state_dir):
    srv = echo_srv("--limit-request-line", "100")
    assert_ok(srv, request_bytes("GET", "/" + "b" * 60))
    assert_error(srv, state_dir, request_bytes("GET", "/" + "b" * 150), 414)


# --- header count ----------------------------------------------------------------------------
def _headers(n):
    return [(f"X-H{i}", "v") for i in range(n)]


def test_header_count_default_limit(echo_srv, state_dir):
    srv = echo_srv()
    assert_ok(srv, request_bytes("GET", "/", headers=_headers(90)))
    assert_error(srv, state_dir, request_bytes("GET", "/", headers=_headers(110)), 431)


def test_header_count_custom_limit(echo_srv, state_dir):
    srv = echo_srv("--limit-request-fields", "5")
    assert_ok(srv, request_bytes("GET", "/", headers=_headers(3)))  # + Host = 4
    assert_error(srv, state_dir, request_bytes("GET", "/", headers=_headers(8)), 431)


# --- header field size ------------------------------------------------------------------------
def test_field_size_default_limit(echo_srv, state_dir):
    srv = echo_srv()
    env = assert_ok(srv, request_bytes("GET", "/", headers=[("X-Big", "x" * 8000)]))
    assert env["HTTP_X_BIG"] == "x" * 8000
    assert_error(srv, state_dir, request_bytes("GET", "/", headers=[("X-Big", "x" * 9000)]), 431)


def test_field_size_custom_limit(echo_srv, state_dir):
    srv = echo_srv("--limit-request-field_size", "50")
    assert_ok(srv, request_bytes("GET", "/", headers=[("X-Big", "y" * 20)]))
    assert_error(srv, state_dir, request_bytes("GET", "/", headers=[("X-Big", "y" * 100)]), 431)


# --- parse errors and their statuses ------------------------------------------------------------
BAD = [
    ("bad-request-line", b"GET /\r\n\r\n", 400),
    ("lowercase-method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bad-version", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    ("garbage-version", b"GET / FOO/1.1\r\nHost: x\r\n\r\n", 400),
    ("no-colon-header", b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
    ("duplicate-host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("cl-and-chunked", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("bad-content-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ("duplicate-content-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400),
    ("chunked-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("unsupported-te", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n", 501),
    ("bad-chunk-size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("asterisk-non-options", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: x\n\n", 400),
]


@pytest.mark.parametrize("name, raw, status", BAD, ids=[b[0] for b in BAD])
def test_parse_error_status(server, state_dir, name, raw, status):
    srv = server("echo:app", env={"STATE_DIR": str(state_dir)})
    assert_error(srv, state_dir, raw, status)
    # the server keeps serving
    assert_ok(srv, request_bytes("GET", "/after-error", headers=[("Connection", "close")]))


def test_error_response_after_valid_keepalive_request(echo_srv, state_dir):
    srv = echo_srv()
    raw = request_bytes("GET", "/ok") + b"GET / HTTP/9.9\r\nHost: x\r\n\r\n"
    resps, closed, data = send(srv, raw)
    assert [r.status for r in resps] == [200, 400], data[:500]
    assert closed
    assert calls(state_dir) == ["'/ok'"]


def test_eof_mid_request_gets_no_response(echo_srv, state_dir):
    srv = echo_srv()
    data, closed = exchange(srv.port, b"GET /incomplete HTTP/1.1\r\nHost: x\r\n")
    assert closed and data == b""
    assert calls(state_dir) == []


# --- header_map -------------------------------------------------------------------------------
UNDERSCORE = request_bytes("GET", "/u", headers=[("X_Foo", "under"), ("X-Bar", "dash")])


def test_header_map_default_drops_underscore(echo_srv):
    env = assert_ok(echo_srv(), UNDERSCORE)
    assert env["HTTP_X_BAR"] == "dash"
    assert "HTTP_X_FOO" not in env


def test_header_map_drop_explicit(echo_srv):
    env = assert_ok(echo_srv("--header-map", "drop"), UNDERSCORE)
    assert "HTTP_X_FOO" not in env and env["HTTP_X_BAR"] == "dash"


def test_header_map_dangerous_keeps(echo_srv):
    env = assert_ok(echo_srv("--header-map", "dangerous"), UNDERSCORE)
    assert env["HTTP_X_FOO"] == "under" and env["HTTP_X_BAR"] == "dash"


def test_header_map_refuse_is_400(echo_srv, state_dir):
    srv = echo_srv("--header-map", "refuse")
    assert_error(srv, state_dir, UNDERSCORE, 400)
    assert_ok(srv, request_bytes("GET", "/", headers=[("X-Dash", "ok")]))


def test_underscore_cannot_spoof_dash_header(echo_srv):
    env = assert_ok(echo_srv(), request_bytes("GET", "/", headers=[("X-Auth", "real"), ("X_Auth", "spoof")]))
    assert env["HTTP_X_AUTH"] == "real"
