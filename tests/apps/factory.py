"""Application factories: ``factory:create()`` and ``factory:create_with('arg', 2)``."""

import json


def _make(tag):
    def app(environ, start_response):
        body = json.dumps(tag).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def create():
    return _make({"factory": "create", "args": []})


def create_with(*args, **kwargs):
    return _make({"factory": "create_with", "args": list(args), "kwargs": kwargs})
