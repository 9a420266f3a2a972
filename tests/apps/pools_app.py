"""Two apps for the worker-pool tests: ``site`` (the `/` pool) and ``reports`` (a CPU pool).

Each answers JSON naming itself, its process, how its worker runs it (gevent when the socket
module is monkey-patched, else the thread it runs on), and what it was told about the
request. ``?sleep=S`` sleeps S seconds first (a slow report).
"""

import json
import os
import threading
import time


def _how():
    try:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            return "gevent"
    except ImportError:
        pass
    return "thread:" + threading.current_thread().name


def _answer(name, environ, start_response):
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    body = json.dumps({
        "app": name,
        "pid": os.getpid(),
        "how": _how(),
        "path": environ["PATH_INFO"],
        "script_name": environ.get("SCRIPT_NAME", ""),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "server_port": environ.get("SERVER_PORT"),
        "scheme": environ["wsgi.url_scheme"],
        "xff": environ.get("HTTP_X_FORWARDED_FOR"),
        "pool_client": environ.get("HTTP_X_FERROCORN_POOL_CLIENT"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def site(environ, start_response):
    return _answer("site", environ, start_response)


def reports(environ, start_response):
    return _answer("reports", environ, start_response)
