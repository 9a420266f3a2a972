"""Raw ASGI WebSocket app (plus a tiny HTTP route so the capability probe has a 200).

Paths (scope["path"]):
  /echo         accept; echo every text/bytes message; on disconnect record the close code
  /close?code   accept, then close with ``code`` (and reason "bye")
  /deny         close before accept -> HTTP 403
  /deny-response  websocket.http.response.start/body (denial-response extension) -> 401 + body
  /subproto     accept choosing "chat.v2" if offered (else none), with an extra header
  /scope        accept, send the scope (JSON text), close
  /burst?n&size accept, send ``n`` text messages of ``size`` bytes as fast as the connection
                takes them, then return without closing (``&fail=1``: raise instead)
"""

import json
import os
import time

STATE_DIR = os.environ.get("STATE_DIR")


def record(line):
    if STATE_DIR:
        with open(os.path.join(STATE_DIR, "ws"), "a") as f:
            f.write(f"{line} {time.time():.6f}\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        body = b"http ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    assert scope["type"] == "websocket", scope["type"]
    path = scope["path"]
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    m = await receive()
    assert m["type"] == "websocket.connect", m
    if path == "/echo":
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                record(f"disconnect {m.get('code')}")
                return
            if m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": int(query.get("code", "1000")), "reason": "bye"})
    elif path == "/deny":
        await send({"type": "websocket.close", "code": 1008})
    elif path == "/deny-response":
        body = b"go away"
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    elif path == "/subproto":
        offered = scope.get("subprotocols", [])
        msg = {"type": "websocket.accept", "headers": [(b"x-ws-extra", b"yes")]}
        if "chat.v2" in offered:
            msg["subprotocol"] = "chat.v2"
        await send(msg)
        await send({"type": "websocket.send", "text": json.dumps(offered)})
        await receive()
    elif path == "/scope":
        await send({"type": "websocket.accept"})
        out = {k: scope.get(k) for k in ("type", "path", "scheme", "http_version", "root_path")}
        out["query_string"] = scope["query_string"].decode()
        out["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        out["subprotocols"] = scope.get("subprotocols")
        await send({"type": "websocket.send", "text": json.dumps(out)})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/burst":
        await send({"type": "websocket.accept"})
        size = int(query.get("size", "1024"))
        for i in range(int(query.get("n", "1000"))):
            await send({"type": "websocket.send", "text": f"{i:08d}".ljust(size, ".")})
        record("burst-sent")
        if query.get("fail"):
            raise RuntimeError("burst failed on purpose")
    else:
        await send({"type": "websocket.close", "code": 1003})
