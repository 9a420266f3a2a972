"""WSGI app for the ``-k gevent`` tests: blocking calls that only overlap when monkey-patched.

Routes:
  /sleep?s     time.sleep(s) (default 0.5) inside a concurrency counter
  /max         "max now pid" of /sleep
  /fetch?port  urllib GET http://127.0.0.1:PORT/ (blocking socket I/O) inside a counter; returns
               the upstream body
  /fetchmax    "max now pid" of /fetch
  /patched     JSON: which modules gevent had patched when this module was imported, and now
  /context     the value a context variable had when the request started (then sets it to this
               request's ``id`` query value): must be "unset" for every request
  /body        reads wsgi.input whole, answers its length (with Expect: 100-continue the read is
               what sends "100 Continue" and pulls the body from the client)
  /write?mib   sends mib (default 32) MiB through the write() callable of start_response
  /shortsleeps?n&s  JSON: the median of n (default 21) time.sleep(s) (default 0.0003) in ms,
               measured here, and the hub's loop class
  /forksleeps  os.fork(); parent and child each time 21 sleeps of 0.3 ms at once. JSON: both
               medians, the descriptor of each one's timer wake-up, and whether the child's is
               a new one
"""

import contextvars
import json
import os
import socket
import threading
import time
import urllib.request


def _patched():
    try:
        from gevent import monkey
    except ImportError:
        return {"gevent": False}
    return {
        "gevent": True,
        "socket": monkey.is_module_patched("socket"),
        "time": monkey.is_module_patched("time"),
        "threading": monkey.is_module_patched("threading"),
        "socket_class": f"{socket.socket.__module__}.{socket.socket.__qualname__}",
    }


AT_IMPORT = _patched()
_lock = threading.Lock()
_sleep = {"now": 0, "max": 0}
_fetch = {"now": 0, "max": 0}
_request_var = contextvars.ContextVar("request_var", default="unset")


def _enter(c):
    with _lock:
        c["now"] += 1
        c["max"] = max(c["max"], c["now"])


def _leave(c):
    with _lock:
        c["now"] -= 1


def _q(environ):
    return dict(p.split("=", 1) if "=" in p else (p, "") for p in environ.get("QUERY_STRING", "").split("&") if p)


def _median_sleep_ms(n, seconds):
    took = []
    for _ in range(n):
        start = time.perf_counter()
        time.sleep(seconds)
        took.append((time.perf_counter() - start) * 1000)
    return sorted(took)[len(took) // 2]


def _reply(start_response, body, status="200 OK", ctype="text/plain"):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _q(environ)
    if path == "/sleep":
        _enter(_sleep)
        try:
            time.sleep(float(q.get("s", "0.5")))
        finally:
            _leave(_sleep)
        return _reply(start_response, "slept")
    if path == "/max":
        return _reply(start_response, f"{_sleep['max']} {_sleep['now']} {os.getpid()}")
    if path == "/fetch":
        _enter(_fetch)
        try:
            url = f"http://127.0.0.1:{int(q['port'])}/{q.get('path', '')}"
            with urllib.request.urlopen(url, timeout=20) as r:
                upstream = r.read()
        finally:
            _leave(_fetch)
        return _reply(start_response, b"upstream:" + upstream)
    if path == "/fetchmax":
        return _reply(start_response, f"{_fetch['max']} {_fetch['now']} {os.getpid()}")
    if path == "/patched":
        out = {"at_import": AT_IMPORT, "now": _patched(), "multithread": environ.get("wsgi.multithread"),
               "multiprocess": environ.get("wsgi.multiprocess")}
        return _reply(start_response, json.dumps(out), ctype="application/json")
    if path == "/context":
        seen = _request_var.get()
        _request_var.set(q.get("id", "?"))
        return _reply(start_response, seen)
    if path == "/body":
        return _reply(start_response, str(len(environ["wsgi.input"].read())))
    if path == "/write":
        mib = int(q.get("mib", "32"))
        write = start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                          ("Content-Length", str(mib * 1024 * 1024))])
        block = b"w" * (1024 * 1024)
        for _ in range(mib):
            write(block)
        return []
    if path == "/shortsleeps":
        import gevent

        took = _median_sleep_ms(int(q.get("n", "21")), float(q.get("s", "0.0003")))
        out = {"median_ms": took, "loop": type(gevent.get_hub().loop).__name__}
        return _reply(start_response, json.dumps(out), ctype="application/json")
    if path == "/forksleeps":
        import gevent

        time.sleep(0.0003)  # the parent's loop has its timer wake-up before the fork
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                inherited = gevent.get_hub().loop._timer_wake  # (kept open: its own descriptor)
                child = {"median_ms": _median_sleep_ms(21, 0.0003),
                         "own_wake": gevent.get_hub().loop._timer_wake is not inherited,
                         "wake_fd": gevent.get_hub().loop._timer_wake.fileno()}
                os.write(writer, json.dumps(child).encode())
            finally:
                os._exit(0)
        os.close(writer)
        parent = {"median_ms": _median_sleep_ms(21, 0.0003), "wake_fd": gevent.get_hub().loop._timer_wake.fileno()}
        child = json.loads(gevent.os.tp_read(reader, 4096) or b"{}")
        os.close(reader)
        os.waitpid(pid, 0)
        return _reply(start_response, json.dumps({"parent": parent, "child": child}), ctype="application/json")
    return _reply(start_response, "not found", status="404 Not Found")
