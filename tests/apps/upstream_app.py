"""An upstream for the balancer tests: it says who it is and what it was sent.

UPSTREAM_NAME names the instance (default: its port). STATE_DIR, when set, gets one line per
request in STATE_DIR/<name>.log ("METHOD RAW_URI"), so a test can count what reached whom.

Paths:
  /whoami         JSON: name, pid, the request's X-Forwarded-*/X-Real-IP/Forwarded/Host/Connection
  /status/CODE    answers CODE
  /slow?ms=N      sleeps N ms, then answers
  /echo           echoes the request body (any method), with its length in X-Body-Length
  /big?n=N        N bytes of 'x' (Content-Length)
  /chunked?n=N    N bytes of 'y' in chunks of 1000 (no Content-Length)
  /healthz        200, or 503 while the file HEALTH_FILE exists; with HEALTH_LOG set, one line
                  per check is appended to that file
  /cached?age=N   a response that may be cached for N seconds (Cache-Control: max-age=N)
"""

import json
import os
import time


def _name(environ):
    return os.environ.get("UPSTREAM_NAME") or environ.get("SERVER_PORT", "?")


def _record(environ):
    state = os.environ.get("STATE_DIR")
    if state:
        with open(os.path.join(state, f"{_name(environ)}.log"), "a", encoding="utf-8") as f:
            f.write(f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI')}\n")


def _query(environ):
    pairs = (p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    return dict(pairs)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path != "/healthz":
        _record(environ)
    query = _query(environ)
    if path == "/healthz":
        checks = os.environ.get("HEALTH_LOG")
        if checks:
            with open(checks, "a", encoding="utf-8") as f:
                f.write(f"{time.monotonic():.3f}\n")
        flag = os.environ.get("HEALTH_FILE")
        sick = bool(flag) and os.path.exists(flag)
        start_response("503 Service Unavailable" if sick else "200 OK", [("Content-Length", "2")])
        return [b"no" if sick else b"ok"]
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        body = f"{code} from {_name(environ)}".encode()
        start_response(f"{code} X", [("Content-Length", str(len(body))), ("X-Upstream", _name(environ))])
        return [body]
    if path == "/slow":
        time.sleep(int(query.get("ms", "100")) / 1000)
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body))), ("X-Body-Length", str(len(body))),
                                  ("X-Upstream", _name(environ))])
        return [body]
    if path == "/big":
        n = int(query.get("n", "1000000"))
        start_response("200 OK", [("Content-Length", str(n)), ("X-Upstream", _name(environ))])
        return [b"x" * n]
    if path == "/chunked":
        n = int(query.get("n", "10000"))
        start_response("200 OK", [("X-Upstream", _name(environ))])
        return (b"y" * min(1000, n - i) for i in range(0, n, 1000))
    if path == "/cached":
        body = f"cached from {_name(environ)}".encode()
        start_response("200 OK", [("Content-Length", str(len(body))), ("X-Upstream", _name(environ)),
                                  ("Cache-Control", f"max-age={query.get('age', '60')}")])
        return [body]
    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    payload = json.dumps({"name": _name(environ), "pid": os.getpid(), "path": path,
                          "headers": headers}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                              ("X-Upstream", _name(environ))])
    return [payload]


application = app
