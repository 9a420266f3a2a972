"""The first import (per STATE_DIR) takes 1.5 s and records the importing pid in
``$STATE_DIR/boot-slow-started``; later imports are quick."""

import os
import time

_marker = os.path.join(os.environ["STATE_DIR"], "boot-slow-started")
if not os.path.exists(_marker):
    with open(_marker, "w") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.5)


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
