"""Apps that answer every request with the worker's pid (``pid=<pid>``): ``app`` (WSGI) and
``asgi_app`` (ASGI, with lifespan), for the tests that count which worker served what."""

import os

HEADERS = [("Content-Type", "text/plain")]


def app(environ, start_response):
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
    body = f"pid={os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
