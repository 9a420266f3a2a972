"""Echo app: JSON of the environ (str/bool/int/tuple values) + base64 of the request body.

The body is read fully before start_response. When STATE_DIR is set, every call appends
one line (the RAW_URI) to STATE_DIR/calls.log so tests can prove an app was NOT called.
"""

import base64
import json
import os


def _record(environ):
    state = os.environ.get("STATE_DIR")
    if state:
        with open(os.path.join(state, "calls.log"), "a", encoding="utf-8") as f:
            f.write(repr(environ.get("RAW_URI")) + "\n")


def environ_json(environ, body):
    out = {}
    for k, v in environ.items():
        if isinstance(v, (str, bool, int)):
            out[k] = v
        elif isinstance(v, tuple) and all(isinstance(x, int) for x in v):
            out[k] = list(v)
    out["_body_b64"] = base64.b64encode(body).decode("ascii")
    out["_types"] = {k: type(v).__name__ for k, v in environ.items() if isinstance(k, str)}
    return json.dumps(out).encode("ascii")


def app(environ, start_response):
    _record(environ)
    body = environ["wsgi.input"].read()
    payload = environ_json(environ, body)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


application = app
