"""Every byte through the connection's writer: with `--no-direct-socket-io` (what a TLS stream
or a capturing cache will impose) the paths that normally bypass the writer and use the client
socket directly fall back and still answer correctly:

- PEP 3333 `write()` from the app's thread: kept and sent with the response;
- a `100-continue` body: `100 Continue` sent and the body read before the app is called;
- `wsgi.file_wrapper` (sendfile): the file read and written through the stream;
- the last write of a response (sent with its FIN): an ordinary write.
"""

import hashlib
import random

import pytest
import requests

from wire import Conn, exchange, parse_responses, request_bytes


@pytest.fixture(scope="module", params=["sync", "gthread"])
def feat(request, module_server, tmp_path_factory):
    state = tmp_path_factory.mktemp("fallback-state")
    srv = module_server(
        "features:app", "-k", request.param, "--no-direct-socket-io", env={"STATE_DIR": str(state)}
    )
    srv.state = state
    return srv


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "big.bin"
    data = random.Random(99).randbytes(1536 * 1024 + 77)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), len(data)


def test_write_output_is_sent_with_the_response(feat):
    data, _ = exchange(feat.port, request_bytes("GET", "/write_only"))
    resps, _ = parse_responses(data)
    assert resps[0].status == 200 and resps[0].body == b"hello"


def test_write_output_waits_for_the_app_to_return(feat):
    """The app's thread may not touch the socket: `early;` is held until the app returns."""
    with Conn(feat.port, timeout=8) as c:
        c.send(request_bytes("GET", "/write_wait?tag=f1"))
        try:
            with pytest.raises(TimeoutError):
                c.read_until(b"early;", timeout=1.0)
        finally:
            (feat.state / "go-f1").write_text("go")
        r = c.read_response(timeout=8)
    assert r.status == 200 and r.body == b"early;late"


def test_an_error_after_write_is_a_clean_500(feat):
    """Nothing reached the client yet, so the exception becomes a whole 500 response."""
    data, _ = exchange(feat.port, request_bytes("GET", "/exc_info_after"))
    resps, _ = parse_responses(data)
    assert resps[0].status == 500, data[:300]
    assert b"partial;" not in data


def post_after_100_continue(c: Conn, path: str, body: bytes):
    """Send a POST that expects 100-continue, check the 100 comes before any body is sent,
    then send the body; returns the final response."""
    c.send(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
    buf = c.read_until(b"\r\n\r\n", timeout=5)
    assert buf.startswith(b"HTTP/1.1 100 Continue\r\n"), buf
    c.buf = c.buf[c.buf.index(b"\r\n\r\n") + 4 :]
    c.send(body)
    return c.read_response()


def test_100_continue_is_sent_and_the_body_read_before_the_app_runs(feat):
    with Conn(feat.port) as c:
        r = post_after_100_continue(c, "/readbody", b"hello")
        assert r.status == 200 and r.body == b"read:hello"
        # the connection stays usable: the body was read by the server, not left on the socket
        c.send(request_bytes("GET", "/after"))
        assert c.read_response().body == b"hello /after"


def test_100_continue_body_of_an_app_that_does_not_read_it(feat):
    with Conn(feat.port) as c:
        r = post_after_100_continue(c, "/noread", b"hello")
        assert r.status == 200 and r.body == b"did not read body"


def test_100_continue_with_requests_client(feat):
    r = requests.post(feat.url + "/readbody", data=b"payload", headers={"Expect": "100-continue"}, timeout=5)
    assert r.status_code == 200 and r.content == b"read:payload"


@pytest.mark.parametrize("with_cl", [True, False], ids=["content-length", "no-content-length"])
def test_a_file_is_copied_through_the_stream(feat, big_file, with_cl):
    path, digest, size = big_file
    r = requests.get(feat.url + "/file", params={"path": str(path), "cl": "1" if with_cl else "0"}, timeout=20)
    assert r.status_code == 200
    assert len(r.content) == size and hashlib.sha256(r.content).hexdigest() == digest


def test_a_file_is_copied_from_its_current_offset(feat, big_file):
    path, _, _ = big_file
    r = requests.get(feat.url + "/file", params={"path": str(path), "seek": "1000", "cl": "1"}, timeout=20)
    assert r.status_code == 200 and r.content == path.read_bytes()[1000:]


def test_a_file_to_an_http10_client_ends_with_the_close(feat, big_file):
    path, digest, _ = big_file
    data, closed = exchange(feat.port, f"GET /file?path={path} HTTP/1.0\r\n\r\n".encode(), timeout=20)
    resps, _ = parse_responses(data)
    assert closed and resps[0].status == 200
    assert hashlib.sha256(resps[0].body).hexdigest() == digest


def test_last_responses_before_a_close_arrive_whole(feat):
    for _ in range(20):
        data, closed = exchange(feat.port, b"GET /after HTTP/1.0\r\n\r\n")
        resps, rest = parse_responses(data)
        assert closed and [r.status for r in resps] == [200] and rest == b""
        assert resps[0].body == b"hello /after"
