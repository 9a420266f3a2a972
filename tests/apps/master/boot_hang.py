"""The first import (per STATE_DIR) hangs for 100 s; later imports are quick."""

import os
import time

_marker = os.path.join(os.environ["STATE_DIR"], "boot-hang-once")
if not os.path.exists(_marker):
    with open(_marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(100)


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
