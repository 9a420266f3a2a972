"""PEP 3333 conformance: environ contents, wsgi.input, start_response, write(), file_wrapper, close()."""

import base64
import hashlib
import itertools
import random
import time

import pytest
import requests

from conftest import wait_for_file
from wire import Conn, exchange, parse_responses, request_bytes


@pytest.fixture(scope="module")
def echo(module_server):
    return module_server("echo:app")


@pytest.fixture(scope="module")
def feat(module_server, tmp_path_factory):
    state = tmp_path_factory.mktemp("wsgi-state")
    srv = module_server("features:app", env={"STATE_DIR": str(state)})
    srv.state = state
    return srv


@pytest.fixture(scope="module")
def feat_spooled(module_server, tmp_path_factory):
    """features:app with every request body spooled to a temporary file."""
    state = tmp_path_factory.mktemp("wsgi-state-spooled")
    srv = module_server("features:app", "--body-buffer-size", "0", env={"STATE_DIR": str(state)})
    srv.state = state
    return srv


def echo_env(srv, raw):
    data, _ = exchange(srv.port, raw)
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [200], data[:300]
    return resps[0].json()


def one(srv, raw, methods=None):
    data, closed = exchange(srv.port, raw)
    resps, rest = parse_responses(data, methods)
    return resps, closed, data


# --- environ -------------------------------------------------------------------------------------
def test_environ_required_keys(echo):
    with Conn(echo.port) as c:
        c.send(
            request_bytes(
                "POST",
                "/some/path?x=1&y=two",
                headers=[("Host", "example.test:1234"), ("Content-Type", "text/plain"), ("X-Thing", "v")],
                body=b"hello",
            )
        )
        env = c.read_response().json()
        client_port = c.sock.getsockname()[1]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/some/path"
    assert env["QUERY_STRING"] == "x=1&y=two"
    assert env["RAW_URI"] == "/some/path?x=1&y=two"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(echo.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "example.test:1234"
    assert env["HTTP_X_THING"] == "v"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["wsgi.version"] == [1, 0]
    assert env["_types"]["wsgi.version"] == "tuple"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["SERVER_SOFTWARE"].startswith("ferrocorn/")
    assert base64.b64decode(env["_body_b64"]) == b"hello"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_environ_value_types(feat):
    r = requests.get(feat.url + "/types?a=b", headers={"X-Latin": "caf\xe9".encode("latin-1")}, timeout=5)
    types = r.json()
    for key, tname in types.items():
        if key.startswith("_") or "." in key:
            continue
        assert tname == "str", f"environ[{key!r}] is {tname}, must be native str"
    for key in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper"):
        assert key in types
    assert types["wsgi.version"] == "tuple"
    assert types["wsgi.multithread"] == types["wsgi.multiprocess"] == types["wsgi.run_once"] == "bool"
    assert set(types["_input_has"]) == {"read", "readline", "readlines", "__iter__"}
    assert set(types["_errors_has"]) == {"write", "writelines", "flush"}
    assert types["_file_wrapper_callable"] is True


def test_no_content_length_or_type_when_absent(echo):
    env = echo_env(echo, request_bytes("GET", "/plain"))
    assert "CONTENT_LENGTH" not in env
    assert "CONTENT_TYPE" not in env
    assert env["QUERY_STRING"] == ""


def test_duplicate_headers_joined_with_comma(echo):
    env = echo_env(
        echo, request_bytes("GET", "/", headers=[("X-Dup", "a"), ("Accept", "text/html"), ("X-Dup", "b"), ("X-Dup", "c")])
    )
    assert env["HTTP_X_DUP"] == "a,b,c"
    assert env["HTTP_ACCEPT"] == "text/html"


def test_header_value_whitespace_stripped(echo):
    env = echo_env(echo, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: \t  padded value \t\r\n\r\n")
    assert env["HTTP_X_PAD"] == "padded value"


def test_path_percent_decoded_query_raw(echo):
    env = echo_env(echo, request_bytes("GET", "/a%20b/%7Euser/%2Fslash?q=%20x&r=%2F"))
    assert env["PATH_INFO"] == "/a b/~user//slash"
    assert env["QUERY_STRING"] == "q=%20x&r=%2F"
    assert env["RAW_URI"] == "/a%20b/%7Euser/%2Fslash?q=%20x&r=%2F"


def test_path_and_header_bytes_are_latin1(echo):
    env = echo_env(echo, b"GET /caf%C3%A9/%FF HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\xff\r\n\r\n")
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/\u00ff"
    assert env["HTTP_X_LATIN"] == "caf\u00e9\u00ff"


def test_fragment_not_in_path(echo):
    env = echo_env(echo, request_bytes("GET", "/frag?a=1#section"))
    assert env["PATH_INFO"] == "/frag"
    assert env["QUERY_STRING"] == "a=1"
    assert env["RAW_URI"] == "/frag?a=1#section"


def test_absolute_form_target(echo):
    env = echo_env(echo, request_bytes("GET", "http://example.com/abs/path?q=1", headers=[("Host", "example.com")]))
    assert env["PATH_INFO"] == "/abs/path"
    assert env["QUERY_STRING"] == "q=1"
    assert env["RAW_URI"] == "http://example.com/abs/path?q=1"


def test_double_slash_path_kept(echo):
    env = echo_env(echo, request_bytes("GET", "//double//slash"))
    assert env["PATH_INFO"] == "//double//slash"


def test_http10_environ(echo):
    env = echo_env(echo, b"GET /ten HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "HTTP_HOST" not in env


def test_script_name_from_env(server):
    srv = server("echo:app", "-e", "SCRIPT_NAME=/prefix")
    env = echo_env(srv, request_bytes("GET", "/prefix/foo/bar?x=1"))
    assert env["SCRIPT_NAME"] == "/prefix"
    assert env["PATH_INFO"] == "/foo/bar"
    assert env["RAW_URI"] == "/prefix/foo/bar?x=1"


def test_script_name_mismatch_is_500(server, state_dir):
    srv = server("echo:app", "-e", "SCRIPT_NAME=/prefix", env={"STATE_DIR": str(state_dir)})
    resps, _, data = one(srv, request_bytes("GET", "/other/path"))
    assert [r.status for r in resps] == [500], data[:300]
    assert not (state_dir / "calls.log").exists()


# --- wsgi.input -----------------------------------------------------------------------------------
BODY = b"line1\nline2\nlast"
INPUT_EXPECT = {
    "read": [BODY],
    "readn": [BODY[i : i + 3] for i in range(0, len(BODY), 3)],
    "readline": [b"line1\n", b"line2\n", b"last"],
    "readlinen": [b"line", b"1\n", b"line", b"2\n", b"last"],
    "readlines": [b"line1\n", b"line2\n", b"last"],
    "iter": [b"line1\n", b"line2\n", b"last"],
}


@pytest.mark.parametrize("store", ["memory", "spooled"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("mode", sorted(INPUT_EXPECT))
def test_wsgi_input_methods(request, store, mode, framing):
    # The same reads give the same pieces whether the body is in memory or in a spool file.
    feat = request.getfixturevalue("feat" if store == "memory" else "feat_spooled")
    if framing == "length":
        raw = request_bytes("POST", f"/input?mode={mode}", body=BODY)
    else:
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (BODY[:4], BODY[4:9], BODY[9:])) + b"0\r\n\r\n"
        raw = request_bytes("POST", f"/input?mode={mode}", headers=[("Transfer-Encoding", "chunked")], body=chunked)
    resps, _, data = one(feat, raw)
    assert [r.status for r in resps] == [200], data[:300]
    parts = [p.encode("latin-1") for p in resps[0].json()["parts"]]
    assert parts == INPUT_EXPECT[mode]


def test_wsgi_input_empty_body(feat):
    resps, _, _ = one(feat, request_bytes("GET", "/input?mode=read"))
    assert resps[0].json()["parts"] == [""]


# --- start_response / write / exc_info ---------------------------------------------------------------
def test_start_response_returns_write_callable(feat):
    resps, _, _ = one(feat, request_bytes("GET", "/write_only"))
    assert resps[0].status == 200 and resps[0].body == b"hello"


def test_start_response_twice_without_exc_info_raises(feat):
    resps, _, data = one(feat, request_bytes("GET", "/start_twice"))
    assert resps[0].status == 200, data[:300]
    assert resps[0].body.startswith(b"raised "), resps[0].body


def test_exc_info_before_headers_sent_replaces_response(feat):
    resps, _, data = one(feat, request_bytes("GET", "/exc_info_before"))
    r = resps[0]
    assert r.status == 503, data[:300]
    assert r.header("X-Second") == "1" and not r.has_header("X-First")
    assert r.body == b"replaced by exc_info"


def test_exc_info_after_headers_sent_reraises(feat):
    exchange(feat.port, request_bytes("GET", "/exc_info_after"))
    marker = wait_for_file(feat.state / "exc_info_after")
    assert marker and marker.strip() == "reraised"


def test_exc_info_after_write_truncates_response(feat):
    """write() sent the headers (and b"partial;"), so the error cannot become a 500: the
    response is cut short and the connection closed (Gunicorn behaviour)."""
    data, closed = exchange(feat.port, request_bytes("GET", "/exc_info_after"))
    assert closed
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"partial;" in data
    assert b"0\r\n\r\n" not in data.split(b"partial;", 1)[1], "truncated response must not look complete"


def test_write_data_is_sent_before_app_returns(feat):
    with Conn(feat.port, timeout=8) as c:
        c.send(request_bytes("GET", "/write_wait?tag=w1"))
        try:
            got = c.read_until(b"early;", timeout=4)
        finally:
            (feat.state / "go-w1").write_text("go")
        assert b"early;" in got
        r = c.read_response(timeout=8)
    assert r.status == 200 and r.body == b"early;late"


# --- file_wrapper --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "big.bin"
    rng = random.Random(1234)
    data = rng.randbytes(1536 * 1024 + 123)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), len(data)


@pytest.mark.parametrize("with_cl", [True, False], ids=["content-length", "no-content-length"])
def test_file_wrapper_big_file(feat, big_file, with_cl):
    path, digest, size = big_file
    r = requests.get(feat.url + "/file", params={"path": str(path), "cl": "1" if with_cl else "0"}, timeout=20)
    assert r.status_code == 200
    assert len(r.content) == size
    assert hashlib.sha256(r.content).hexdigest() == digest
    if with_cl:
        assert r.headers["Content-Length"] == str(size)


def test_file_wrapper_sends_from_current_offset(feat, big_file):
    path, _, size = big_file
    r = requests.get(feat.url + "/file", params={"path": str(path), "seek": "1000", "cl": "1"}, timeout=20)
    assert r.status_code == 200
    assert r.content == path.read_bytes()[1000:]


def test_file_wrapper_http10(feat, big_file):
    path, digest, size = big_file
    data, closed = exchange(feat.port, f"GET /file?path={path} HTTP/1.0\r\n\r\n".encode(), timeout=20)
    resps, _ = parse_responses(data)
    assert closed and resps[0].status == 200
    assert hashlib.sha256(resps[0].body).hexdigest() == digest


def test_file_wrapper_head_sends_no_body(feat, big_file):
    path, _, size = big_file
    data, _ = exchange(
        feat.port,
        request_bytes("HEAD", f"/file?path={path}&cl=1") + request_bytes("GET", "/after", headers=[("Connection", "close")]),
    )
    resps, rest = parse_responses(data, ["HEAD", "GET"])
    assert [r.status for r in resps] == [200, 200] and rest == b"", data[:300]
    assert resps[0].header("Content-Length") == str(size)
    assert resps[1].body == b"hello /after"


def test_file_wrapper_filelike_without_fileno(feat):
    r = requests.get(feat.url + "/filelike", timeout=5)
    assert r.status_code == 200
    assert r.content == bytes(range(256)) * 40
    assert wait_for_file(feat.state / "filelike_closed"), "FileWrapper did not close the file-like"


# --- close() ------------------------------------------------------------------------------------
def test_close_called_after_normal_response(feat):
    r = requests.get(feat.url + "/close_normal?tag=n1", timeout=5)
    assert r.content == b"abc"
    assert wait_for_file(feat.state / "close-n1"), "result.close() not called"


def test_close_called_when_iterator_raises_before_first_chunk(feat):
    resps, _, _ = one(feat, request_bytes("GET", "/close_raise?tag=r0&at=0"))
    assert resps[0].status == 500
    assert wait_for_file(feat.state / "close-r0"), "close() not called after iterator error"


def test_close_called_when_iterator_raises_mid_stream(feat):
    data, closed = exchange(feat.port, request_bytes("GET", "/close_raise?tag=r2&at=2"))
    assert closed and data.startswith(b"HTTP/1.1 200")
    assert wait_for_file(feat.state / "close-r2"), "close() not called after mid-stream error"


def test_close_called_when_client_disconnects(feat):
    c = Conn(feat.port, timeout=5)
    c.send(request_bytes("GET", "/close_disconnect?tag=dc"))
    c.read_until(b"xxxx", timeout=5)
    c.close()
    text = wait_for_file(feat.state / "close-dc", timeout=8)
    assert text, "close() not called after client disconnect"
    yields = (feat.state / "yield-dc").read_text().split()
    assert len(yields) < 400, "server kept iterating the whole body after the client went away"


# --- wsgi.errors ------------------------------------------------------------------------------------
def test_wsgi_errors_go_to_error_log(feat):
    assert requests.get(feat.url + "/errors", timeout=5).text == "logged"
    feat.wait_log(r"WSGI_ERRORS_MARKER line one")
    feat.wait_log(r"WSGI_ERRORS_MARKER line two")


def test_wsgi_errors_to_error_logfile(server, tmp_path):
    log = tmp_path / "err.log"
    srv = server("features:app", "--error-logfile", str(log), log_path=log)
    assert requests.get(srv.url + "/errors", timeout=5).status_code == 200
    srv.wait_log(r"WSGI_ERRORS_MARKER line two", source=srv.log_text)


# --- wsgiref.validate matrix ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def validated(module_server):
    return module_server("validated:app")


PATHS = ["/", "/a/b", "/%7Euser/x%20y"]
QUERIES = ["", "a=1&b=2"]
STYLES = ["list", "gen", "write"]
BODIES = {
    "none": (None, b""),
    "length": ("length", b"some body bytes"),
    "chunked": ("chunked", b"chunked body bytes"),
}


def _validator_requests(method):
    body_kinds = ["none", "length", "chunked"] if method in ("POST", "PUT", "PATCH") else ["none"]
    for path, query, style, bk in itertools.product(PATHS, QUERIES, STYLES, body_kinds):
        qs = "&".join(x for x in (query, f"style={style}") if x)
        framing, body = BODIES[bk]
        headers = []
        wire_body = b""
        if framing == "length":
            wire_body = body
        elif framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
            wire_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        yield path, qs, body, request_bytes(method, f"{path}?{qs}", headers=headers, body=wire_body)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_validator_matrix(validated, method):
    with Conn(validated.port) as c:
        for path, qs, body, raw in _validator_requests(method):
            c.send(raw)
            r = c.read_response(head=(method == "HEAD"))
            assert r.status == 200, (method, path, qs, r.status, r.body[:500], validated.stderr_text()[-2000:])
            if method != "HEAD":
                from urllib.parse import unquote

                expected_info = f"{method} {unquote(path)} ?{qs} len={len(body)}\n".encode("latin-1")
                assert r.body == expected_info + body
    time.sleep(0.2)
    err = validated.stderr_text()
    for bad in ("VALIDATION FAILURE", "AssertionError", "Warning", "Traceback"):
        assert bad not in err, err[-3000:]
