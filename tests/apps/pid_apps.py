"""Apps that answer every request with the worker's pid (``pid=<pid>``): ``app`` (WSGI) and
``asgi_app`` (ASGI, with lifespan), for the tests that count which worker served what. A query
``?sleep_ms=N`` makes the request take N ms (``time.sleep``, cooperative under gevent;
``asyncio.sleep`` for ASGI)."""

import asyncio
import os
import time
from urllib.parse import parse_qs

HEADERS = [("Content-Type", "text/plain")]


def _sleep_ms(query: str) -> float:
    return float(parse_qs(query).get("sleep_ms", ["0"])[0]) / 1000


def app(environ, start_response):
    pause = _sleep_ms(environ.get("QUERY_STRING", ""))
    if pause:
        time.sleep(pause)
    body = f"pid={os.getpid()}".encode()
    start_response("200 OK", HEADERS + [("Content-Length", str(len(body)))])
    return [body]


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
