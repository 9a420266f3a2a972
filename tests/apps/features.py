"""One WSGI app with a route per PEP 3333 / server feature under test.

Routes are selected by PATH_INFO; parameters come from the query string. Apps that need
to leave evidence (close() called, app reached) write files into STATE_DIR (env var).
"""

import io
import json
import os
import sys
import time
from urllib.parse import parse_qs

STATE_DIR = os.environ.get("STATE_DIR")


def _mark(name, text="1"):
    if STATE_DIR:
        with open(os.path.join(STATE_DIR, name), "a", encoding="utf-8") as f:
            f.write(text + "\n")


def _q(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}


def _text(start_response, body, status="200 OK", extra=()):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def _json(start_response, obj, status="200 OK"):
    return _text(start_response, json.dumps(obj), status)


# --- streaming -------------------------------------------------------------------------
def stream(environ, start_response):
    q = _q(environ)
    n = int(q.get("n", "3"))
    delay = float(q.get("delay", "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(n):
            if i and delay:
                time.sleep(delay)
            yield f"chunk{i};".encode()

    return gen()


def stream_with_length(environ, start_response):
    body = [b"abc", b"def", b"ghi"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return iter(body)


def list_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", b"list ", b"body"]


def empty_chunks(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b""
        yield b"a"
        yield b""
        yield b"b"

    return gen()


# --- write() callable --------------------------------------------------------------------
def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written-1;")
    write(b"written-2;")
    return [b"iter-1;", b"iter-2"]


def write_wait(environ, start_response):
    """write() one chunk, then block until the test creates STATE_DIR/go-<tag> (max 5 s)."""
    tag = _q(environ).get("tag", "w")
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"early;")
    go = os.path.join(STATE_DIR or ".", f"go-{tag}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if os.path.exists(go):
            return [b"late"]
        time.sleep(0.02)
    return [b"timeout"]


def write_only(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    write(b"hello")
    return []


# --- start_response / exc_info ------------------------------------------------------------
def start_twice(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("201 Created", [("Content-Type", "text/plain")])
    except Exception as e:  # the server must refuse the second call
        body = f"raised {type(e).__name__}".encode()
    else:
        body = b"no error"
    return [body]


def exc_info_before(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
    try:
        raise ValueError("replaced")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Second", "1")], sys.exc_info())
    return [b"replaced by exc_info"]


def exc_info_after(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial;")  # headers are now sent
    try:
        raise KeyError("after")
    except KeyError:
        try:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        except KeyError:
            _mark("exc_info_after", "reraised")
            raise
        _mark("exc_info_after", "not-reraised")
    return [b"should not be reached"]


# --- file wrapper --------------------------------------------------------------------------
def file_wrapper(environ, start_response):
    q = _q(environ)
    path = q["path"]
    seek = int(q.get("seek", "0"))
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("cl") == "1":
        headers.append(("Content-Length", str(os.path.getsize(path) - seek)))
    start_response("200 OK", headers)
    f = open(path, "rb")
    f.seek(seek)
    return environ["wsgi.file_wrapper"](f, 8192)


class _NoFileno(io.BytesIO):
    def fileno(self):  # BytesIO raises io.UnsupportedOperation; make it absent instead
        raise AttributeError("fileno")


class _FileLike:
    """A file-like with read() and close() only (no fileno)."""

    def __init__(self, data):
        self._buf = io.BytesIO(data)

    def read(self, n=-1):
        return self._buf.read(n)

    def close(self):
        _mark("filelike_closed")
        self._buf.close()


def file_wrapper_filelike(environ, start_response):
    data = bytes(range(256)) * 40  # 10 KiB
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](_FileLike(data), 1000)


# --- close() tracking ------------------------------------------------------------------------
class ClosingIter:
    def __init__(self, tag, chunks, delay=0.0, fail_at=None):
        self.tag = tag
        self.chunks = chunks
        self.delay = delay
        self.fail_at = fail_at
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.fail_at is not None and self.i == self.fail_at:
            raise RuntimeError(f"iterator failure in {self.tag}")
        if self.i >= len(self.chunks):
            raise StopIteration
        if self.i and self.delay:
            time.sleep(self.delay)
        c = self.chunks[self.i]
        self.i += 1
        _mark(f"yield-{self.tag}", str(self.i))
        return c

    def close(self):
        _mark(f"close-{self.tag}", "closed")


def close_normal(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ClosingIter(_q(environ).get("tag", "normal"), [b"a", b"b", b"c"])


def close_raise(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    q = _q(environ)
    return ClosingIter(q.get("tag", "raise"), [b"a", b"b", b"c"], fail_at=int(q.get("at", "0")))


def close_disconnect(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    chunk = b"x" * 65536
    return ClosingIter(_q(environ).get("tag", "disconnect"), [chunk] * 400, delay=0.02)


# --- crashes ---------------------------------------------------------------------------------
def crash_before(environ, start_response):
    raise RuntimeError("boom-before-start-response SECRET_TRACEBACK_MARKER")


def crash_iter(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        raise RuntimeError("boom-in-iterable SECRET_TRACEBACK_MARKER")
        yield b"never"  # pragma: no cover

    return gen()


def crash_after_headers(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"first-chunk;"
        time.sleep(0.1)
        raise RuntimeError("boom-after-headers SECRET_TRACEBACK_MARKER")

    return gen()


def crash_after_headers_cl(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])

    def gen():
        yield b"first-chunk;"
        raise RuntimeError("boom-after-headers-cl")

    return gen()


# --- wsgi.input methods -----------------------------------------------------------------------
def input_methods(environ, start_response):
    inp = environ["wsgi.input"]
    mode = _q(environ).get("mode", "read")
    if mode == "read":
        parts = [inp.read()]
    elif mode == "readn":
        parts = []
        while True:
            c = inp.read(3)
            if not c:
                break
            parts.append(c)
    elif mode == "readline":
        parts = []
        while True:
            line = inp.readline()
            if not line:
                break
            parts.append(line)
    elif mode == "readlinen":
        parts = []
        while True:
            line = inp.readline(4)
            if not line:
                break
            parts.append(line)
    elif mode == "readlines":
        parts = inp.readlines()
    elif mode == "iter":
        parts = list(inp)
    else:
        raise ValueError(mode)
    assert all(isinstance(p, bytes) for p in parts)
    return _json(start_response, {"parts": [p.decode("latin-1") for p in parts]})


def read_partial(environ, start_response):
    """Reads only a few body bytes; the server must drain the rest for keep-alive."""
    first = environ["wsgi.input"].read(2)
    return _text(start_response, first)


def digest(environ, start_response):
    """Reads the body in 64 KiB pieces; reports its length, sha256, and how many of the worker's
    open files are in the temp directory while the body is open (a spooled body is one)."""
    import hashlib
    import tempfile

    inp = environ["wsgi.input"]
    first = inp.read(65536)
    tmp = os.path.realpath(tempfile.gettempdir())
    spool_files = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(tmp + "/"):
                spool_files += 1
        except OSError:
            pass
    h = hashlib.sha256(first)
    n = len(first)
    while True:
        piece = inp.read(65536)
        if not piece:
            break
        h.update(piece)
        n += len(piece)
    body = json.dumps({"len": n, "sha256": h.hexdigest(), "spool_files": spool_files}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


# --- 100-continue ----------------------------------------------------------------------------
def latin1_header(environ, start_response):
    """PEP 3333: header values are latin-1 native strings (one byte per character on the wire)."""
    return _text(start_response, b"latin-1", extra=[("X-Word", "caf\xe9 \xff\xa0end")])


def not_latin1_header(environ, start_response):
    """A header value latin-1 cannot encode: the server must refuse it (500), not send UTF-8."""
    return _text(start_response, b"never sent", extra=[("X-Price", "5 \u20ac")])


def noread(environ, start_response):
    _mark("noread")
    return _text(start_response, b"did not read body")


def readbody(environ, start_response):
    data = environ["wsgi.input"].read()
    return _text(start_response, b"read:" + data)


# --- headers ---------------------------------------------------------------------------------
def hop_by_hop(environ, start_response):
    body = b"hop"
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("Connection", "close-not-really"),
            ("Keep-Alive", "timeout=99"),
            ("Transfer-Encoding", "gzip"),
            ("Upgrade", "h2c"),
            ("Server", "app-server"),
            ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("TE", "trailers"),
            ("Trailers", "X-Foo"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Custom", "kept"),
        ],
    )
    return [body]


def cl_overflow(environ, start_response):
    """Announces 5 bytes but yields more: only 5 may reach the wire."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hel", b"loEXTRA", b"GET /smuggled HTTP/1.1\r\n\r\n"]


def bad_header(environ, start_response):
    kind = _q(environ).get("kind", "crlf")
    if kind == "crlf":
        headers = [("X-Evil", "a\r\nInjected: 1")]
    elif kind == "bytes":
        headers = [("X-Bytes", b"v")]
    elif kind == "name":
        headers = [("Bad Name", "v")]
    else:
        headers = [("X-Ok", "v")]
    start_response("200 OK", headers)
    return [b"should not be sent"]


def bad_status(environ, start_response):
    start_response(b"200 OK", [("Content-Type", "text/plain")])
    return [b"bytes status"]


def no_start_response(environ, start_response):
    return [b"forgot start_response"]


def body_on_no_body_status(environ, start_response):
    code = _q(environ).get("code", "204")
    start_response(f"{code} Whatever", [("Content-Type", "text/plain")])
    return [b"this body must not reach the wire"]


def multi_headers(environ, start_response):
    body = b"multi"
    start_response(
        "200 OK",
        [("Content-Length", str(len(body))), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Dup", "x")],
    )
    return [body]


def status(environ, start_response):
    code = _q(environ).get("code", "200")
    reasons = {"200": "OK", "204": "No Content", "304": "Not Modified", "404": "Not Found", "418": "I'm a teapot"}
    start_response(f"{code} {reasons.get(code, 'Whatever')}", [("Content-Type", "text/plain")])
    if code in ("204", "304"):
        return []
    return [f"status {code}".encode()]


def errors_stream(environ, start_response):
    err = environ["wsgi.errors"]
    err.write("WSGI_ERRORS_MARKER line one\n")
    err.writelines(["WSGI_ERRORS_MARKER line two\n"])
    err.flush()
    return _text(start_response, b"logged")


def slow(environ, start_response):
    delay = float(_q(environ).get("delay", "1.5"))
    _mark("slow-started")
    time.sleep(delay)
    _mark("slow-finished")
    return _text(start_response, b"slow done")


def environ_types(environ, start_response):
    out = {}
    for k, v in environ.items():
        out[k] = type(v).__name__
    inp = environ["wsgi.input"]
    out["_input_has"] = [m for m in ("read", "readline", "readlines", "__iter__") if hasattr(inp, m)]
    err = environ["wsgi.errors"]
    out["_errors_has"] = [m for m in ("write", "writelines", "flush") if hasattr(err, m)]
    out["_file_wrapper_callable"] = callable(environ.get("wsgi.file_wrapper"))
    return _json(start_response, out)


ROUTES = {
    "/stream": stream,
    "/stream_with_length": stream_with_length,
    "/list_body": list_body,
    "/empty_chunks": empty_chunks,
    "/write": write_callable,
    "/write_only": write_only,
    "/write_wait": write_wait,
    "/start_twice": start_twice,
    "/exc_info_before": exc_info_before,
    "/exc_info_after": exc_info_after,
    "/file": file_wrapper,
    "/filelike": file_wrapper_filelike,
    "/close_normal": close_normal,
    "/close_raise": close_raise,
    "/close_disconnect": close_disconnect,
    "/crash_before": crash_before,
    "/crash_iter": crash_iter,
    "/crash_after_headers": crash_after_headers,
    "/crash_after_headers_cl": crash_after_headers_cl,
    "/input": input_methods,
    "/digest": digest,
    "/read_partial": read_partial,
    "/noread": noread,
    "/latin1": latin1_header,
    "/not_latin1": not_latin1_header,
    "/readbody": readbody,
    "/hop_by_hop": hop_by_hop,
    "/multi_headers": multi_headers,
    "/cl_overflow": cl_overflow,
    "/bad_header": bad_header,
    "/bad_status": bad_status,
    "/no_start_response": no_start_response,
    "/body_on_no_body_status": body_on_no_body_status,
    "/status": status,
    "/errors": errors_stream,
    "/slow": slow,
    "/types": environ_types,
}


def app(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        return _text(start_response, b"hello " + environ["PATH_INFO"].encode("latin-1"))
    return handler(environ, start_response)


application = app
