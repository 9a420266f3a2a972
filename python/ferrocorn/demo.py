"""The bundled demo WSGI app: ``ferrocorn ferrocorn.demo:app``.

Endpoints: ``/`` hello text, ``/json`` a small JSON document, ``/cpu?n=N`` a CPU-bound loop,
``/io?ms=N`` sleeps N milliseconds (an I/O-bound stand-in).
"""

import json
import time
from urllib.parse import parse_qs

_INDEX = b"""Hello from ferrocorn!
Try: /json  /cpu?n=40000  /io?ms=20
"""


def _int_param(environ, name, default, ceiling):
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    try:
        return max(0, min(int(values[0]), ceiling)) if values else default
    except ValueError:
        return default


def _respond(start_response, status, body, content_type):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        return _respond(start_response, "200 OK", _INDEX, "text/plain; charset=utf-8")
    if path == "/json":
        body = json.dumps({"message": "Hello, World!", "server": environ.get("SERVER_SOFTWARE")})
        return _respond(start_response, "200 OK", body.encode(), "application/json")
    if path == "/cpu":
        n = _int_param(environ, "n", 40000, 10_000_000)
        acc = 0
        for i in range(n):
            acc = (acc * 31 + i) % 1_000_003
        return _respond(start_response, "200 OK", f"{acc}\n".encode(), "text/plain")
    if path == "/io":
        ms = _int_param(environ, "ms", 20, 10_000)
        time.sleep(ms / 1000)
        return _respond(start_response, "200 OK", f"slept {ms} ms\n".encode(), "text/plain")
    return _respond(start_response, "404 Not Found", b"not found\n", "text/plain")
