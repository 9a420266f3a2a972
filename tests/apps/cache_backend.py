"""A backend for the response-cache tests (tests/test_cache.py, tests/test_cache_nginx_diff.py):
every behaviour is driven by the query string, so a test case is just a URL.

Query parameters (order matters: response headers are emitted in the order their parameters
appear, which is what nginx's header handlers see):

- ``cc=V``       ``Cache-Control: V``
- ``expires=V``  ``Expires:``; ``+N``/``-N`` means N seconds from now (an HTTP date), anything
                 else is sent as is (``expires=0`` is not a date)
- ``xae=V``      ``X-Accel-Expires:``; ``@+N`` means the Unix time N seconds from now
- ``cookie=V``   ``Set-Cookie: c=V; Path=/``
- ``vary=V``     ``Vary: V``
- ``h=Name:V``   any other response header
- ``etag=V``     ``ETag: "V"``; a request whose ``If-None-Match`` is ``"V"`` gets ``304 Not
                 Modified`` (no body) with the same headers, ``Cache-Control`` from ``cc304=``
                 when given (a revalidation, ``--cache-revalidate``)
- ``status=N``   the status (default 200)
- ``sleep=S``    sleep S seconds before answering
- ``hang=1``     sleep 30 s before answering (a test kills the worker meanwhile)
- ``raise=1``    raise before answering (the server answers 500)
- ``size=N``     a body of exactly N bytes
- ``stream=1``   the body comes as a generator of ``chunks=K`` pieces (default 4),
                 ``chunk_sleep=S`` between them; ``raise_at=I`` raises instead of piece I
- anything else (``id=...``, ``nocache=...``) is ignored, so tests can make unique URLs.

A request header ``X-Backend: <query string>`` adds parameters that are not in the URL (and so
not in a cache key built from it): e.g. ``X-Backend: raise=1`` makes a refresh fail.

Every body starts with ``call=<per-process call number> pid=<pid> method=... target=...
al=<Accept-Language>`` and ends with ``END\\n`` (a truncated body is recognisable); headers
``X-Backend-Pid`` and ``X-Backend-Call`` carry the same numbers.

Calls are counted across processes (all workers, and nginx's upstream): when the environment
variable ``CACHE_BACKEND_COUNTS`` names a directory, each call appends one line
``METHOD TARGET PID`` to ``<dir>/calls.log`` with ``O_APPEND`` (one ``write``, atomic between
processes) *before* the app sleeps, hangs or raises, so a test can see a call that is in
progress. :func:`calls` and :func:`call_pids` read it.

``app`` is the WSGI app, ``asgi_app`` its ASGI twin (same parameters).
"""

from __future__ import annotations

import asyncio
import http
import os
import re
import threading
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, quote

COUNTS_ENV = "CACHE_BACKEND_COUNTS"
CALLS_FILE = "calls.log"
HANG_SECONDS = 30.0

_counter_lock = threading.Lock()
_counter = 0


# -- the shared call log ------------------------------------------------------------------------


def record_call(method: str, target: str) -> None:
    directory = os.environ.get(COUNTS_ENV)
    if not directory:
        return
    line = f"{method} {target} {os.getpid()}\n".encode("latin-1", "replace")
    fd = os.open(os.path.join(directory, CALLS_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_calls(directory) -> list[tuple[str, str, int]]:
    """Every call logged in ``directory``: (method, target, pid), in order."""
    path = Path(directory) / CALLS_FILE
    try:
        text = path.read_text("latin-1")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) == 3:
            out.append((parts[0], parts[1], int(parts[2])))
    return out


def calls(directory, target: str | None = None, *, path: str | None = None, method: str | None = None) -> int:
    """How many app calls were logged for exactly ``target`` (path?query), or for any target
    whose path is ``path``; optionally only those with ``method``."""
    n = 0
    for m, t, _ in read_calls(directory):
        if method is not None and m != method:
            continue
        if target is not None and t != target:
            continue
        if path is not None and t.split("?", 1)[0] != path:
            continue
        n += 1
    return n


def call_pids(directory, target: str | None = None, *, path: str | None = None) -> list[int]:
    """The pids of the processes that served the logged calls (same filters as :func:`calls`)."""
    return [
        pid
        for _, t, pid in read_calls(directory)
        if (target is None or t == target) and (path is None or t.split("?", 1)[0] == path)
    ]


# -- the plan for one request, shared by the WSGI and ASGI apps -----------------------------------

_RELATIVE = re.compile(r"^[+-]\d+$")


class Plan:
    def __init__(self, method: str, target: str, params: list[tuple[str, str]], accept_language: str):
        global _counter
        with _counter_lock:
            _counter += 1
            self.call = _counter
        p = {}
        for k, v in params:
            p[k] = v  # the last one wins (X-Backend overrides the query)
        self.params = p
        self.status = int(p.get("status", "200"))
        self.sleep = float(p.get("sleep", "0") or 0)
        self.hang = p.get("hang", "") not in ("", "0")
        self.raise_before = p.get("raise", "") not in ("", "0")
        self.stream = p.get("stream", "") not in ("", "0")
        self.chunks = max(1, int(p.get("chunks", "4")))
        self.chunk_sleep = float(p.get("chunk_sleep", "0") or 0)
        self.raise_at = int(p["raise_at"]) if p.get("raise_at", "") != "" else None
        self.headers: list[tuple[str, str]] = [("Content-Type", "text/plain")]
        now = time.time()
        for k, v in params:
            if k == "cc":
                self.headers.append(("Cache-Control", v))
            elif k == "expires":
                if _RELATIVE.match(v):
                    v = formatdate(now + int(v), usegmt=True)
                self.headers.append(("Expires", v))
            elif k == "xae":
                if v.startswith("@") and _RELATIVE.match(v[1:]):
                    v = "@" + str(int(now) + int(v[1:]))
                self.headers.append(("X-Accel-Expires", v))
            elif k == "cookie":
                self.headers.append(("Set-Cookie", f"c={v}; Path=/"))
            elif k == "vary":
                self.headers.append(("Vary", v))
            elif k == "h":
                name, _, value = v.partition(":")
                self.headers.append((name.strip(), value.strip()))
            elif k == "etag" and v == p["etag"]:  # one ETag: the last value (X-Backend's)
                self.headers.append(("ETag", f'"{v}"'))
        self.headers.append(("X-Backend-Pid", str(os.getpid())))
        self.headers.append(("X-Backend-Call", str(self.call)))
        head = f"call={self.call} pid={os.getpid()} method={method} target={target} al={accept_language}\n"
        body = head.encode("latin-1", "replace")
        size = p.get("size", "")
        if size != "":
            n = int(size)
            body = (body + b"." * n)[: max(0, n - 4)] + b"END\n"[max(0, 4 - n) :]
        else:
            body += b"END\n"
        self.body = body

    def status_line(self) -> str:
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        return f"{self.status} {reason}"

    def pieces(self) -> list[bytes]:
        if not self.stream:
            return [self.body]
        n = min(self.chunks, max(1, len(self.body)))
        step = -(-len(self.body) // n)
        return [self.body[i : i + step] for i in range(0, len(self.body), step)]


def _params(query: str, control: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True) + parse_qsl(control, keep_blank_values=True)


# -- WSGI -----------------------------------------------------------------------------------------


def _wsgi_target(environ) -> str:
    raw = environ.get("RAW_URI")
    if raw:
        return raw
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    query = environ.get("QUERY_STRING", "")
    return path + ("?" + query if query else "")


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    target = _wsgi_target(environ)
    record_call(method, target)
    length = environ.get("CONTENT_LENGTH")
    if length:
        environ["wsgi.input"].read(int(length))
    plan = Plan(
        method,
        target,
        _params(environ.get("QUERY_STRING", ""), environ.get("HTTP_X_BACKEND", "")),
        environ.get("HTTP_ACCEPT_LANGUAGE", ""),
    )
    if plan.sleep:
        time.sleep(plan.sleep)
    if plan.hang:
        time.sleep(HANG_SECONDS)
    if plan.raise_before:
        raise RuntimeError("cache_backend: raise requested")
    headers = list(plan.headers)
    etag = plan.params.get("etag")
    if etag is not None and environ.get("HTTP_IF_NONE_MATCH") == f'"{etag}"':
        kept = [(n, v) for n, v in headers if n != "Content-Type"]
        if "cc304" in plan.params:
            kept = [(n, v) for n, v in kept if n != "Cache-Control"]
            kept.append(("Cache-Control", plan.params["cc304"]))
        start_response("304 Not Modified", kept)
        return [b""]
    if not plan.stream:
        headers.append(("Content-Length", str(len(plan.body))))
    start_response(plan.status_line(), headers)
    if not plan.stream:
        return [plan.body]
    return _stream(plan)


def _stream(plan: Plan):
    for i, piece in enumerate(plan.pieces()):
        if i and plan.chunk_sleep:
            time.sleep(plan.chunk_sleep)
        if plan.raise_at is not None and i == plan.raise_at:
            raise RuntimeError("cache_backend: raise in the middle of the body")
        yield piece


# -- ASGI -----------------------------------------------------------------------------------------


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    method = scope["method"]
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path") or quote(scope["path"]).encode()
    target = raw_path.decode("latin-1") + ("?" + query if query else "")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    record_call(method, target)
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    plan = Plan(method, target, _params(query, headers.get("x-backend", "")), headers.get("accept-language", ""))
    if plan.sleep:
        await asyncio.sleep(plan.sleep)
    if plan.hang:
        await asyncio.sleep(HANG_SECONDS)
    if plan.raise_before:
        raise RuntimeError("cache_backend: raise requested")
    out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in plan.headers]
    if not plan.stream:
        out.append((b"content-length", str(len(plan.body)).encode()))
    await send({"type": "http.response.start", "status": plan.status, "headers": out})
    pieces = plan.pieces()
    for i, piece in enumerate(pieces):
        if i and plan.chunk_sleep:
            await asyncio.sleep(plan.chunk_sleep)
        if plan.raise_at is not None and i == plan.raise_at:
            raise RuntimeError("cache_backend: raise in the middle of the body")
        await send({"type": "http.response.body", "body": piece, "more_body": i + 1 < len(pieces)})
