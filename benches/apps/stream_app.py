"""Streamed response: ``STREAM_CHUNKS`` chunks (default 1024) of ``STREAM_CHUNK_BYTES`` bytes
(default 1024) per request — a CSV export or log tail written row by row. ``app`` is the WSGI
generator, ``asgi_app`` the same stream as ASGI ``http.response.body`` messages with
``more_body``. No Content-Length, so HTTP/1.1 servers frame it chunked."""

import os

CHUNKS = int(os.environ.get("STREAM_CHUNKS", "1024"))
CHUNK = b"x" * (int(os.environ.get("STREAM_CHUNK_BYTES", "1024")) - 1) + b"\n"
HEADERS = [("Content-Type", "text/csv")]
ASGI_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/csv")]}
ASGI_CHUNK = {"type": "http.response.body", "body": CHUNK, "more_body": True}
ASGI_END = {"type": "http.response.body", "body": b""}


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    for _ in range(CHUNKS):
        yield CHUNK


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(ASGI_START)
    for _ in range(CHUNKS):
        await send(ASGI_CHUNK)
    await send(ASGI_END)
