"""An app that drives ``ferrocorn.cache`` over HTTP, for tests/test_app_cache.py: each request
runs one cache operation in whichever worker serves it, and answers JSON with the result and the
worker's pid, so a test sees one worker read what another wrote.

Routes (query parameters ``k`` key, ``v`` value as JSON (or ``size=N``: a string of N bytes),
``t`` timeout seconds, ``d`` delta):

- ``/get``, ``/set``, ``/add``, ``/delete``, ``/incr``, ``/decr``, ``/touch``, ``/clear``,
  ``/get_many?k=a,b``, ``/backend``;
- ``/computed?x=N``: ``@cache.cached(lock=True)`` around a computation that takes ``sleep``
  seconds (default 0.5) and appends one line to ``$APP_CACHE_CALLS`` per run (counted across
  processes), so a test can see how many times it ran;
- ``hold=S`` on any route: busy-wait S seconds first (blocking the worker whatever its class, so
  concurrent requests spread over the workers);
- ``/response``: a plain 200 with ``Cache-Control: max-age=60`` (for the response cache).

``app`` is the WSGI app, ``asgi_app`` the ASGI twin using the ``a*`` functions.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs

from ferrocorn import cache

CALLS_ENV = "APP_CACHE_CALLS"


def _record_call(x: str) -> None:
    path = os.environ.get(CALLS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{x} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _params(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _timeout(p: dict[str, str]) -> float | None:
    return float(p["t"]) if "t" in p else None


@cache.cached(timeout=60, key="computed:{0}", lock=True)
def computed(x: str, seconds: float) -> str:
    _record_call(x)
    time.sleep(seconds)
    return f"value-of-{x}"


@cache.cached(timeout=60, key="acomputed:{0}", lock=True)
async def acomputed(x: str, seconds: float) -> str:
    import asyncio

    _record_call(x)
    await asyncio.sleep(seconds)
    return f"value-of-{x}"


def _hold(p: dict[str, str]) -> None:
    until = time.perf_counter() + float(p.get("hold", "0"))
    while time.perf_counter() < until:
        pass


def _run(path: str, p: dict[str, str]) -> object:
    _hold(p)
    k = p.get("k", "")
    if path == "/get":
        return cache.get(k, "<missing>")
    if path == "/set":
        value = "x" * int(p["size"]) if "size" in p else json.loads(p["v"])
        return cache.set(k, value, _timeout(p))
    if path == "/add":
        return cache.add(k, json.loads(p["v"]), _timeout(p))
    if path == "/delete":
        return cache.delete(k)
    if path == "/incr":
        return cache.incr(k, int(p.get("d", "1")))
    if path == "/decr":
        return cache.decr(k, int(p.get("d", "1")))
    if path == "/touch":
        return cache.touch(k, _timeout(p))
    if path == "/clear":
        cache.clear()
        return True
    if path == "/get_many":
        return cache.get_many(k.split(","))
    if path == "/backend":
        return cache.backend()
    if path == "/computed":
        return computed(p["x"], float(p.get("sleep", "0.5")))
    raise KeyError(path)


async def _arun(path: str, p: dict[str, str]) -> object:
    _hold(p)
    k = p.get("k", "")
    if path == "/get":
        return await cache.aget(k, "<missing>")
    if path == "/set":
        return await cache.aset(k, json.loads(p["v"]), _timeout(p))
    if path == "/add":
        return await cache.aadd(k, json.loads(p["v"]), _timeout(p))
    if path == "/incr":
        return await cache.aincr(k, int(p.get("d", "1")))
    if path == "/delete":
        return await cache.adelete(k)
    if path == "/computed":
        return await acomputed(p["x"], float(p.get("sleep", "0.5")))
    if path == "/backend":
        return cache.backend()
    raise KeyError(path)


def _answer(result: object) -> bytes:
    return json.dumps({"result": result, "pid": os.getpid()}).encode()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/response":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
        _record_call("response")
        return [b"response body\n"]
    try:
        body = _answer(_run(path, _params(environ.get("QUERY_STRING", ""))))
        status = "200 OK"
    except (KeyError, ValueError) as e:
        body = json.dumps({"error": type(e).__name__, "pid": os.getpid()}).encode()
        status = "404 Not Found" if isinstance(e, KeyError) else "409 Conflict"
    start_response(status, [("Content-Type", "application/json")])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    try:
        body = _answer(await _arun(scope["path"], _params(scope["query_string"].decode())))
        status = 200
    except (KeyError, ValueError):
        body, status = b"{}", 404
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})
