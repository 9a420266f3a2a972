"""Apps that answer every request with the worker's pid (``pid=<pid>``): ``app`` (WSGI) and
``asgi_app`` (ASGI, with lifespan), for the tests that count which worker served what. A query
``?sleep_ms=N`` makes the request take N ms (``time.sleep``, cooperative under gevent;
``asyncio.sleep`` for ASGI); ``?size=N`` pads the WSGI body to N bytes, streamed in 64 KiB
chunks from a generator (the app's iterator is pulled while the response is written, so a
client that does not read keeps the request running)."""

import asyncio
import os
import time
from urllib.parse import parse_qs

HEADERS = [("Content-Type", "text/plain")]


def _sleep_ms(query: str) -> float:
    return float(parse_qs(query).get("sleep_ms", ["0"])[0]) / 1000


def app(environ, start_response):
    query = environ.get("QUERY_STRING", "")
    pause = _sleep_ms(query)
    if pause:
        time.sleep(pause)
    body = f"pid={os.getpid()}".encode()
    size = max(len(body), int(parse_qs(query).get("size", ["0"])[0]))
    start_response("200 OK", HEADERS + [("Content-Length", str(size))])
    if size == len(body):
        return [body]
    return _padded(body, size)


def _padded(body, size):
    yield body
    size -= len(body)
    while size > 0:
        chunk = min(size, 65536)
        yield b" " * chunk
        size -= chunk


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    pause = _sleep_ms(scope.get("query_string", b"").decode())
    if pause:
        await asyncio.sleep(pause)
    body = f"pid={os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
