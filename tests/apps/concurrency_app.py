"""Records how many requests run at once in this worker (for the worker-class tests)."""

import os
import threading
import time

_lock = threading.Lock()
_state = {"now": 0, "max": 0}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/max":
        body = f'{_state["max"]} {environ["wsgi.multithread"]} {os.getpid()}'.encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/boom":
        raise RuntimeError("boom in a pool thread")
    with _lock:
        _state["now"] += 1
        _state["max"] = max(_state["max"], _state["now"])
    try:
        time.sleep(float(environ.get("QUERY_STRING") or "0.3"))
    finally:
        with _lock:
            _state["now"] -= 1

    def stream():
        yield b"first;"
        time.sleep(0.05)
        yield b"second"

    start_response("200 OK", [("Content-Type", "text/plain")])
    return stream()
