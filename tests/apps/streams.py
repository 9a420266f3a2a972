"""Streamed responses for tests/test_streaming.py, as a WSGI ``app`` and an ASGI ``asgi_app``.

``GET /stream?n=N&size=S``  N chunks of S bytes, chunk i starting with its number (``chunk``).
``GET /fail?n=N&size=S``    N such chunks, then the app raises.
While streaming, the app records how many bytes it has produced so far in
``$STATE_DIR/produced`` (every 64 chunks, and at the end).
"""

import os
from urllib.parse import parse_qs

STATE_DIR = os.environ.get("STATE_DIR")


def chunk(i, size):
    """Chunk ``i`` of ``size`` bytes: its zero-padded number, then filler."""
    return f"{i:08d}".encode().ljust(size, b".")


def _record(produced):
    if STATE_DIR:
        path = os.path.join(STATE_DIR, "produced")
        with open(path + ".tmp", "w") as f:
            f.write(f"{produced}\n")
        os.replace(path + ".tmp", path)


def _params(query):
    q = parse_qs(query)
    return int(q.get("n", ["1000"])[0]), int(q.get("size", ["1024"])[0])


def _chunks(n, size, fail):
    produced = 0
    for i in range(n):
        produced += size
        if i % 64 == 63:
            _record(produced)
        yield chunk(i, size)
    _record(produced)
    if fail:
        raise RuntimeError("stream failed on purpose")


def app(environ, start_response):
    n, size = _params(environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _chunks(n, size, environ["PATH_INFO"] == "/fail")


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    n, size = _params(scope["query_string"].decode())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    for piece in _chunks(n, size, scope["path"] == "/fail"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
