"""Slow/fast mix for ``accept_balance.py``.

``GET /slow`` sleeps 200 ms (a long request that occupies a sync worker), ``GET /fast``
and ``GET /`` return at once; anything else is a 404.
"""

import time

SLOW_S = 0.200
OK = b"OK"
NOT_FOUND = b"Not Found"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/slow":
        time.sleep(SLOW_S)
    elif path not in ("/fast", "/"):
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(NOT_FOUND)))])
        return [NOT_FOUND]
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(OK)))])
    return [OK]
