"""Minimal raw ASGI app: 13-byte ``Hello, World!`` with Content-Length."""

BODY = b"Hello, World!"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": BODY})
