"""Reports selected process environment variables (for -e KEY=VAL) and the cwd."""

import json
import os


def app(environ, start_response):
    keys = environ.get("QUERY_STRING", "").split(",")
    body = json.dumps({"env": {k: os.environ.get(k) for k in keys if k}, "cwd": os.getcwd()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
