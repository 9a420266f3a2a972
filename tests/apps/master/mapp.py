"""Master-suite app: reports the worker pid; routes for slow/hanging requests.

At import it appends "import <pid>" to $STATE_DIR/imports.log when STATE_DIR is set.
Routes (PATH_INFO):
  /            -> "<pid>"
  /slow?d=S    -> sleeps S seconds (marks slow-started / slow-finished), then "slow done <pid>"
  /hang        -> time.sleep(100) (marks hang-started)
  /busy        -> busy loop for 100 s (marks busy-started)
  /umask       -> the worker's current umask (octal)
  /ids         -> "uid gid"
"""

import os
import time
from urllib.parse import parse_qs

STATE_DIR = os.environ.get("STATE_DIR")
if STATE_DIR:
    with open(os.path.join(STATE_DIR, "imports.log"), "a", encoding="utf-8") as f:
        f.write(f"import {os.getpid()}\n")


def _mark(name, text="1"):
    if STATE_DIR:
        with open(os.path.join(STATE_DIR, name), "a", encoding="utf-8") as f:
            f.write(text + "\n")


def _resp(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    pid = os.getpid()
    if path == "/slow":
        _mark("slow-started", str(pid))
        time.sleep(float(q.get("d", "2")))
        _mark("slow-finished", str(pid))
        return _resp(start_response, f"slow done {pid}")
    if path == "/hang":
        _mark("hang-started", str(pid))
        time.sleep(100)
        return _resp(start_response, "woke up")
    if path == "/busy":
        _mark("busy-started", str(pid))
        end = time.monotonic() + 100
        while time.monotonic() < end:
            pass
        return _resp(start_response, "busy done")
    if path == "/umask":
        m = os.umask(0)
        os.umask(m)
        return _resp(start_response, oct(m))
    if path == "/ids":
        return _resp(start_response, f"{os.getuid()} {os.getgid()}")
    return _resp(start_response, str(pid))


application = app
