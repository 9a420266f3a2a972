"""Raw ASGI 3 app for the ``-k asgi`` tests.

Writes lifespan and per-request events to ``$STATE_DIR/events`` (one line each, with pid) so a
test can check their order, and records disconnects in ``$STATE_DIR/disconnect``.

Routes:
  /               13-byte hello
  /scope          JSON: type, http_version, method, path, raw_path, query_string, root_path,
                  headers, scheme, server, client, state (the scope's lifespan state)
  /state-mutate   sets scope["state"]["touched"] (a per-request copy: must not leak)
  /echo           POST: echoes the request body (Content-Length), plus x-body-sha256 header
  /stream?n&delay chunked response: n chunks "chunk-i\n", sleeping ``delay`` s between them
  /gate           first chunk, then waits for /open (asyncio.Event), then the last chunk
  /open           sets the gate event
  /hold           sends start + one chunk, then awaits receive() until http.disconnect; records it
  /sleep?s        concurrency counter around asyncio.sleep(s) (default 0.5)
  /max            "max now pid"
  /block?s        blocks the loop with time.sleep(s) (an app that should not be async), then
                  answers "blocked"
  /loop           module.class of the running event loop
  /boom           raises before sending anything
  /boom-late      sends the start, then raises
  /boom-started   sends only http.response.start, then raises (nothing went out: a 500)
  /pieces         records each http.request as "piece LEN MORE" in ``$STATE_DIR/pieces`` as it
                  arrives; answers with the total length and sha256 (or records "disconnect")
  /slow-sink?ms   receives the body, sleeping ``ms`` between messages; answers its length
  /duplex         full duplex: starts a chunked response ("ready\n"), then echoes each piece
                  of the request body as it arrives as "got:<piece>\n"
  /start-only     sends http.response.start (201) and returns without a body message
  /big?n&size     n body messages of ``size`` bytes each (byte i of the body is i % 251), then
                  an empty last one: more than the connection buffers, for backpressure
  /after-body     sends the whole body, then awaits receive(): records that http.disconnect came
  /linger         start + "lingering\n" (more_body), then sleeps forever; records "cancelled" in
                  ``$STATE_DIR/linger`` when its task is cancelled
  /after-response-work  the whole body, then 0.5 s more work; records "finished" (or "cancelled")
"""

import asyncio
import hashlib
import json
import os
import time

STATE_DIR = os.environ.get("STATE_DIR")
_conc = {"now": 0, "max": 0}
_gate = None


def record(name, line):
    if not STATE_DIR:
        return
    with open(os.path.join(STATE_DIR, name), "a") as f:
        f.write(f"{line} {os.getpid()} {time.time():.6f}\n")


async def send_text(send, body, status=200, ctype=b"text/plain", extra=()):
    if isinstance(body, str):
        body = body.encode()
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())] + list(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            delay = float(os.environ.get("STARTUP_DELAY", "0"))
            if delay:
                await asyncio.sleep(delay)
            record("events", "startup")
            scope["state"]["db"] = "connected"
            scope["state"]["counter"] = 41
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            record("events", "shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


def _q(scope):
    return dict(p.split("=", 1) if "=" in p else (p, "") for p in scope["query_string"].decode().split("&") if p)


async def app(scope, receive, send):
    global _gate
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    assert scope["type"] == "http"
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root):] or "/"  # ASGI: path includes root_path (as uvicorn does)
    q = _q(scope)
    if _gate is None:
        _gate = asyncio.Event()
    if path != "/max":
        record("events", f"request {path}")

    if path == "/":
        return await send_text(send, b"Hello, World!")

    if path in ("/scope", "/state-mutate"):
        state = scope.get("state")
        if path == "/state-mutate" and state is not None:
            state["touched"] = True
            state["counter"] = state.get("counter", 0) + 1
        out = {
            "type": scope["type"],
            "asgi": scope.get("asgi"),
            "http_version": scope.get("http_version"),
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope.get("raw_path", b"").decode("latin-1") if scope.get("raw_path") else None,
            "query_string": scope["query_string"].decode("latin-1"),
            "root_path": scope.get("root_path"),
            "scheme": scope.get("scheme"),
            "server": list(scope["server"]) if scope.get("server") else None,
            "client": list(scope["client"]) if scope.get("client") else None,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "state": state,
            "has_state": "state" in scope,
        }
        return await send_text(send, json.dumps(out), ctype=b"application/json")

    if path == "/echo":
        body = b""
        while True:
            m = await receive()
            assert m["type"] == "http.request", m
            body += m.get("body", b"")
            if not m.get("more_body", False):
                break
        digest = hashlib.sha256(body).hexdigest().encode()
        return await send_text(send, body, ctype=b"application/octet-stream", extra=[(b"x-body-sha256", digest)])

    if path == "/stream":
        n = int(q.get("n", "3"))
        delay = float(q.get("delay", "0.5"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            if i:
                await asyncio.sleep(delay)
            record("events", f"chunk {i}")
            await send({"type": "http.response.body", "body": f"chunk-{i}\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/gate":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        try:
            await asyncio.wait_for(_gate.wait(), 10)
            last = b"last\n"
        except asyncio.TimeoutError:
            last = b"timeout\n"
        _gate.clear()
        await send({"type": "http.response.body", "body": last, "more_body": False})
        return

    if path == "/open":
        _gate.set()
        return await send_text(send, b"opened")

    if path == "/hold":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"holding\n", "more_body": True})
        first = await receive()  # the (empty) request body
        record("disconnect", f"first {first['type']}")
        try:
            m = await asyncio.wait_for(receive(), 20)
            record("disconnect", f"got {m['type']}")
        except asyncio.TimeoutError:
            record("disconnect", "timeout")
        # sending after a disconnect must not crash the worker (ASGI: it may raise OSError/no-op)
        try:
            await send({"type": "http.response.body", "body": b"late", "more_body": False})
        except Exception as exc:  # noqa: BLE001
            record("disconnect", f"send-after-disconnect {type(exc).__name__}")
        return

    if path == "/after-body":
        await receive()
        await send_text(send, b"done")
        try:
            m = await asyncio.wait_for(receive(), 5)
            record("disconnect", f"after-body {m['type']}")
        except asyncio.TimeoutError:
            record("disconnect", "after-body timeout")
        return

    if path == "/sleep":
        _conc["now"] += 1
        _conc["max"] = max(_conc["max"], _conc["now"])
        try:
            await asyncio.sleep(float(q.get("s", "0.5")))
        finally:
            _conc["now"] -= 1
        return await send_text(send, b"slept")

    if path == "/block":
        time.sleep(float(q.get("s", "0.5")))
        return await send_text(send, b"blocked")

    if path == "/loop":
        loop = asyncio.get_running_loop()
        return await send_text(send, f"{type(loop).__module__}.{type(loop).__qualname__}")

    if path == "/max":
        return await send_text(send, f"{_conc['max']} {_conc['now']} {os.getpid()}")

    if path == "/boom":
        raise RuntimeError("boom in an ASGI task")

    if path == "/linger":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"lingering\n", "more_body": True})
        try:
            while True:
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            record("linger", "cancelled")
            raise

    if path == "/after-response-work":
        await send_text(send, b"done early")
        try:
            await asyncio.sleep(0.5)
            record("linger", "finished")
        except asyncio.CancelledError:
            record("linger", "cancelled")
            raise
        return

    if path == "/pieces":
        total, digest = 0, hashlib.sha256()
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                record("pieces", "disconnect")
                return
            body = m.get("body", b"")
            total += len(body)
            digest.update(body)
            record("pieces", f"piece {len(body)} {int(m.get('more_body', False))}")
            if not m.get("more_body", False):
                break
        return await send_text(send, f"{total} {digest.hexdigest()}")

    if path == "/duplex":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ready\n", "more_body": True})
        while True:
            m = await receive()
            if m["type"] != "http.request":
                return
            if m.get("body"):
                await send({"type": "http.response.body", "body": b"got:" + m["body"] + b"\n", "more_body": True})
            if not m.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/slow-sink":
        pause = float(q.get("ms", "1")) / 1000
        total = 0
        while True:
            m = await receive()
            total += len(m.get("body", b""))
            if not m.get("more_body", False):
                break
            await asyncio.sleep(pause)
        return await send_text(send, str(total))

    if path == "/boom-started":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        raise RuntimeError("boom after start in an ASGI task")

    if path == "/start-only":
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-started", b"yes")]})
        return

    if path == "/big":
        n, size = int(q.get("n", "64")), int(q.get("size", "65536"))
        pattern = bytes(i % 251 for i in range(251 * (size // 251 + 2)))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(n * size).encode())]})
        for i in range(n):
            offset = (i * size) % 251
            await send({"type": "http.response.body", "body": pattern[offset:offset + size], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/latin1":
        return await send_text(send, b"latin-1", extra=[(b"x-word", b"caf\xe9 \xff\xa0end")])

    if path == "/boom-late":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("late boom in an ASGI task")

    return await send_text(send, b"not found", status=404)
