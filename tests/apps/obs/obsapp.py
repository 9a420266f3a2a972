"""Observability test app: status by path, worker pid in the body, app-defined metrics.

Paths:
  /            200, body "pid=<pid>"
  /missing     404
  /error       500 (returned by the app)
  /raise       the app raises (server answers 500; counts as an app exception)
  /order?kind=K  200, increments orders_total{kind=K}, sets a gauge, observes a histogram
"""

import os
from urllib.parse import parse_qs

from ferrocorn import metrics

ORDERS = metrics.Counter("orders", "Orders placed", labelnames=("kind",))
QUEUE = metrics.Gauge("obs_queue_length", "Jobs waiting")
LATENCY = metrics.Histogram("obs_checkout_seconds", "Checkout time", buckets=[0.1, 0.5, 1.0])


def _reply(start_response, status, body):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    pid = os.getpid()
    if path == "/missing":
        return _reply(start_response, "404 Not Found", f"missing pid={pid}")
    if path == "/error":
        return _reply(start_response, "500 Internal Server Error", f"error pid={pid}")
    if path == "/raise":
        raise RuntimeError("boom (intentional, from the obs test app)")
    if path == "/order":
        qs = parse_qs(environ.get("QUERY_STRING", ""))
        kind = qs.get("kind", ["book"])[0]
        ORDERS.labels(kind=kind).inc()
        QUEUE.inc()
        LATENCY.observe(0.27)
        return _reply(start_response, "200 OK", f"order pid={pid}")
    return _reply(start_response, "200 OK", f"pid={pid}")
