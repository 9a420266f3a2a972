"""Request smuggling matrix (issue 19): every ambiguous framing, obfuscated header and malformed
line is refused with its 4xx (501 for a transfer coding the server does not implement, as
Gunicorn answers) and the connection is closed, and the request hidden behind it never reaches
the app.

Each case carries a second request, ``GET /smuggled``, placed where a server that read the
framing differently from a front proxy would take it for the next request. The probe app
records every request it sees; after each exchange the test checks that it saw nothing at all
(every case is refused before the app is called).
"""

import pytest

from wire import exchange, parse_responses

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def post(headers: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /front " + version + b"\r\nHost: x\r\n" + headers + b"\r\n" + body


CHUNKED_EMPTY = b"0\r\n\r\n" + SMUGGLED

CASES = {
    # --- Content-Length and Transfer-Encoding together -----------------------------------------
    "CL.TE": (post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(CHUNKED_EMPTY), CHUNKED_EMPTY), 400),
    "TE.CL": (post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"5c\r\n" + SMUGGLED), 400),
    # --- Transfer-Encoding obfuscated (TE.TE) -------------------------------------------------
    "TE chunked twice": (post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED_EMPTY), 400),
    "TE chunked, chunked": (post(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED_EMPTY), 400),
    "TE chunked then identity": (post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_EMPTY), 400),
    "TE chunked then gzip": (post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", CHUNKED_EMPTY), 400),
    "TE xchunked": (post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_EMPTY), 501),
    "TE chunked-false": (post(b"Transfer-Encoding: chunked-false\r\n", CHUNKED_EMPTY), 501),
    "TE quoted": (post(b'Transfer-Encoding: "chunked"\r\n', CHUNKED_EMPTY), 501),
    "TE with space before colon": (post(b"Transfer-Encoding : chunked\r\n", CHUNKED_EMPTY), 400),
    "TE name with a tab": (post(b"Transfer-Encoding\t: chunked\r\n", CHUNKED_EMPTY), 400),
    "TE with a vertical tab": (post(b"Transfer-Encoding: \x0bchunked\r\n", CHUNKED_EMPTY), 400),
    "TE folded (obs-fold)": (post(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED_EMPTY), 400),
    "TE on HTTP/1.0": (post(b"Transfer-Encoding: chunked\r\n", CHUNKED_EMPTY, b"HTTP/1.0"), 400),
    # --- Content-Length ----------------------------------------------------------------------
    "CL twice, different": (post(b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(SMUGGLED), SMUGGLED), 400),
    "CL twice, equal": (post(b"Content-Length: 0\r\nContent-Length: 0\r\n", SMUGGLED), 400),
    "CL list form": (post(b"Content-Length: 0, %d\r\n" % len(SMUGGLED), SMUGGLED), 400),
    "CL plus sign": (post(b"Content-Length: +0\r\n", SMUGGLED), 400),
    "CL minus sign": (post(b"Content-Length: -1\r\n", SMUGGLED), 400),
    "CL leading zero": (post(b"Content-Length: 00\r\n", SMUGGLED), 400),
    "CL hex": (post(b"Content-Length: 0x0\r\n", SMUGGLED), 400),
    "CL with a decimal point": (post(b"Content-Length: 0.0\r\n", SMUGGLED), 400),
    "CL unicode digit": (post("Content-Length: \u0660\r\n".encode("utf-8"), SMUGGLED), 400),
    "CL overflow": (post(b"Content-Length: 99999999999999999999999\r\n", SMUGGLED), 400),
    "CL with space before colon": (post(b"Content-Length : 0\r\n", SMUGGLED), 400),
    # --- chunked body --------------------------------------------------------------------------
    "chunk size overflow": (post(b"Transfer-Encoding: chunked\r\n", b"1" + b"0" * 20 + b"\r\n" + SMUGGLED), 400),
    "chunk size hex prefix": (post(b"Transfer-Encoding: chunked\r\n", b"0x0\r\n\r\n" + SMUGGLED), 400),
    "chunk size with a sign": (post(b"Transfer-Encoding: chunked\r\n", b"+0\r\n\r\n" + SMUGGLED), 400),
    "chunk size with a space": (post(b"Transfer-Encoding: chunked\r\n", b"0 \r\n\r\n" + SMUGGLED), 400),
    "chunk size empty": (post(b"Transfer-Encoding: chunked\r\n", b"\r\n\r\n" + SMUGGLED), 400),
    "chunk extension with a bare LF": (post(b"Transfer-Encoding: chunked\r\n", b"0;a\nb\r\n\r\n" + SMUGGLED), 400),
    "chunk extension with a NUL": (post(b"Transfer-Encoding: chunked\r\n", b"0;a=\x00\r\n\r\n" + SMUGGLED), 400),
    "chunk data longer than its size": (post(b"Transfer-Encoding: chunked\r\n", b"1\r\nab\r\n0\r\n\r\n" + SMUGGLED), 400),
    "chunk ending in a bare LF": (post(b"Transfer-Encoding: chunked\r\n", b"1\r\na\n0\r\n\r\n" + SMUGGLED), 400),
    # --- line endings and control characters ---------------------------------------------
    "bare LF after the request line": (b"POST /front HTTP/1.1\nHost: x\r\nContent-Length: 0\r\n\r\n" + SMUGGLED, 400),
    "bare LF between headers": (b"POST /front HTTP/1.1\r\nHost: x\nContent-Length: 0\r\n\r\n" + SMUGGLED, 400),
    "bare LF ending the head": (b"POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 0\n\n" + SMUGGLED, 400),
    "bare CR in a header value": (post(b"X-A: a\rContent-Length: 0\r\n", SMUGGLED), 400),
    "bare CR in the request line": (b"POST /front\rX HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    "NUL in a header value": (post(b"X-A: a\x00b\r\nContent-Length: 0\r\n", SMUGGLED), 400),
    "NUL in a header name": (post(b"X-\x00A: a\r\nContent-Length: 0\r\n", SMUGGLED), 400),
    "DEL in a header value": (post(b"X-A: a\x7fb\r\nContent-Length: 0\r\n", SMUGGLED), 400),
    "control char in the target": (b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    "whitespace before the first header": (b"GET /front HTTP/1.1\r\n Host: x\r\n\r\n" + SMUGGLED, 400),
    "obs-fold in a value": (post(b"X-A: a\r\n b\r\nContent-Length: 0\r\n", SMUGGLED), 400),
    "header without a colon": (post(b"X-A a\r\nContent-Length: 0\r\n", SMUGGLED), 400),
    # --- request line --------------------------------------------------------------------------
    "absolute-form with a bad scheme": (b"GET 1http://127.0.0.1/p HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    "HTTP/0.9 request line": (b"GET /front\r\n" + SMUGGLED, 400),
    "unknown version HTTP/1.2": (b"GET /front HTTP/1.2\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    "unknown version HTTP/2.0": (b"GET /front HTTP/2.0\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    "lower-case version": (b"GET /front http/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    "two spaces in the request line": (b"GET  /front HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 400),
    "HTTP/1.1 without Host": (b"GET /front HTTP/1.1\r\nX-A: b\r\n\r\n" + SMUGGLED, 400),
    "two Host headers": (b"GET /front HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, 400),
}


@pytest.fixture(scope="module", params=["sync", "gthread", "gevent", "asgi"])
def probe(request, module_server, tmp_path_factory):
    state = tmp_path_factory.mktemp("smuggling")
    app = "probe:asgi_app" if request.param == "asgi" else "probe:app"
    srv = module_server(app, "-k", request.param, env={"STATE_DIR": str(state)})
    srv.state = state
    return srv


def seen(srv) -> list[str]:
    path = srv.state / "seen"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


@pytest.mark.parametrize("name", list(CASES))
def test_ambiguous_or_malformed_requests_are_refused_and_nothing_reaches_the_app(probe, name):
    raw, status = CASES[name]
    seen(probe)
    data, closed = exchange(probe.port, raw, shutdown=False, timeout=5)
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [status], f"{name}: {data[:400]!r}"
    assert closed, f"{name}: the connection stayed open after {status}"
    assert seen(probe) == [], f"{name}: the app saw a request"


def test_the_probe_sees_an_honest_request(probe):
    """The matrix's assertion that the app saw nothing is only worth something if it can see."""
    seen(probe)
    data, _ = exchange(probe.port, post(b"Content-Length: 3\r\nConnection: close\r\n", b"abc"), shutdown=False)
    assert parse_responses(data)[0][0].status == 200
    assert seen(probe) == ["POST /front 3"]
