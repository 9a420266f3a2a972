"""A Flask app using Flask-Caching with ``ferrocorn.contrib.flask_caching.FerrocornCache``, for
tests/test_cache_frameworks.py. Every run of a cached body appends one line ``<name> <pid>`` to
``$FLASK_CACHE_CALLS`` (one ``write`` with O_APPEND, so runs are counted across processes), and
every response carries ``X-Pid`` (set after the cache, so a cached answer still says which
worker served it). ``hold=S`` busy-waits S seconds first, so concurrent requests spread over the
workers.

- ``/view/<tag>``: ``@cache.cached(timeout=60)``, its body says which pid computed it;
- ``/square/<n>``: calls ``square(n)``, ``@cache.memoize()`` (the default timeout);
- ``/forget/<n>``: ``cache.delete_memoized(square, n)``;
- ``/set/<k>?v=JSON``, ``/get/<k>``, ``/inc/<k>``: the cache's own operations.
"""

from __future__ import annotations

import json
import os
import time

from flask import Flask, Response, jsonify, request
from flask_caching import Cache

CALLS_ENV = "FLASK_CACHE_CALLS"

app = Flask(__name__)
cache = Cache(
    app,
    config={
        "CACHE_TYPE": "ferrocorn.contrib.flask_caching.FerrocornCache",
        "CACHE_DEFAULT_TIMEOUT": 60,
        "CACHE_KEY_PREFIX": "flask_cache_app_",
    },
)


def _record_call(name: str) -> None:
    path = os.environ.get(CALLS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@app.before_request
def hold() -> None:
    until = time.perf_counter() + float(request.args.get("hold", "0"))
    while time.perf_counter() < until:
        pass


@app.after_request
def say_pid(response: Response) -> Response:
    response.headers["X-Pid"] = str(os.getpid())
    return response


@app.get("/view/<tag>")
@cache.cached(timeout=60)
def view(tag: str) -> str:
    _record_call(f"view-{tag}")
    return f"{tag} computed by {os.getpid()}"


@cache.memoize()
def square(n: int) -> dict:
    _record_call(f"square-{n}")
    return {"square": n * n, "computed_by": os.getpid()}


@app.get("/square/<int:n>")
def square_view(n: int) -> Response:
    return jsonify(square(n))


@app.get("/forget/<int:n>")
def forget(n: int) -> Response:
    cache.delete_memoized(square, n)
    return jsonify(True)


@app.get("/set/<k>")
def set_value(k: str) -> Response:
    return jsonify(cache.set(k, json.loads(request.args["v"])))


@app.get("/get/<k>")
def get_value(k: str) -> Response:
    return jsonify(cache.get(k))


@app.get("/inc/<k>")
def inc_value(k: str) -> Response:
    return jsonify(cache.cache.inc(k))
