"""I/O-bound stand-in: every request sleeps 20 ms, then returns ``200 OK``.

A sync worker is occupied for the whole sleep, so N sync workers top out at about
N / 20 ms = 50·N requests per second, whatever the server.
"""

import time

SLEEP_S = 0.020
BODY = b"OK"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(SLEEP_S)
    start_response("200 OK", HEADERS)
    return [BODY]
