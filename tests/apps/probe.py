"""WSGI (`app`) and ASGI (`asgi_app`) probes. Each records every request the app sees (method, path, body length) in STATE_DIR/seen, one line
each, and answers 200 "ok": the smuggling tests check that no request hidden in another's body
or framing ever reaches the app."""

import os

STATE_DIR = os.environ.get("STATE_DIR")


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    if STATE_DIR:
        with open(os.path.join(STATE_DIR, "seen"), "a") as f:
            f.write(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)}\n")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if STATE_DIR:
        with open(os.path.join(STATE_DIR, "seen"), "a") as f:
            f.write(f"{scope['method']} {scope['path']} {size}\n")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
