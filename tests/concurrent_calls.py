"""Helpers the cache tests share: ``fire`` runs one call on many threads released together,
``json_op`` makes one request on a fresh connection to an app that answers JSON (so requests
spread over the workers)."""

from __future__ import annotations

import threading
import time

import requests


def fire(n: int, fn, timeout: float = 40.0, raise_errors: bool = True) -> list:
    """``fn(i)`` for i in 0..n on ``n`` threads released together by a barrier; their results.
    The first exception is raised, or with ``raise_errors=False`` left in its place."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        try:
            barrier.wait(timeout)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, end - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "concurrent calls did not finish"
    if raise_errors:
        for r in results:
            if isinstance(r, BaseException):
                raise r
    return results


def json_op(srv, path: str, **params) -> dict:
    """One request on a fresh connection: its status, merged into its JSON body."""
    r = requests.get(srv.url + path, params=params, headers={"Connection": "close"}, timeout=30)
    assert r.headers.get("Content-Type") == "application/json", r.text
    return {"status": r.status_code, **r.json()}
