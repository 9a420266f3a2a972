"""Helpers for the observability tests (tests/test_metrics_*.py, tests/test_ctl_top.py).

Imported as ``apps.obs.obshelpers``. Everything is loopback-only and bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from procs import children, pid_alive, wait_until  # noqa: F401 (re-exported)

OBS_DIR = Path(__file__).resolve().parent
APP = "obsapp:app"
METRICS_RE = re.compile(r"Metrics at: http://(\S+?)/metrics")
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


# -- waiting / processes ------------------------------------------------------------------
def free_port(kind=socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- starting a server ------------------------------------------------------------------
def start(server, *args, workers=2, metrics=True, ctl=None, env=None, cwd=OBS_DIR, app=APP, **kw):
    """Start the obs app. ``ctl``: control socket path, or None for ``--no-control-socket``.

    With ``metrics`` the metrics endpoint is bound on a kernel-chosen loopback port; the
    address is read back from the master's ``Metrics at:`` log line into ``srv.metrics_url``.
    """
    a = ["-w", str(workers)]
    if metrics:
        a += ["--metrics-bind", "127.0.0.1:0"]
    a += ["--control-socket", str(ctl)] if ctl is not None else ["--no-control-socket"]
    srv = server(app, *a, *args, env=env, cwd=cwd, **kw)
    srv.metrics_url = None
    if ctl is not None:
        # the socket may be bound a moment after "Listening at" is logged
        wait_until(lambda: Path(ctl).exists(), 10, f"control socket {ctl}")
    if metrics:
        m = srv.wait_log(METRICS_RE.pattern, timeout=10)
        srv.metrics_addr = m.group(1)
        srv.metrics_url = f"http://{m.group(1)}/metrics"
    return srv


def wait_workers(srv, n, timeout=15.0) -> list[int]:
    """Wait until the master has exactly ``n`` live children; returns their pids."""
    return wait_until(
        lambda: (lambda c: c if len(c) == n else None)(children(srv.proc.pid)),
        timeout,
        f"{n} live workers",
    )


# -- HTTP --------------------------------------------------------------------------------
def get(port, path="/", timeout=5.0):
    """One request on a fresh connection (``Connection: close``); returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def body_pid(body: bytes) -> int:
    m = re.search(rb"pid=(\d+)", body)
    assert m, body
    return int(m.group(1))


def scrape(url, openmetrics=False, timeout=5.0):
    """GET the metrics endpoint; returns (content_type, text)."""
    req = urllib.request.Request(url, headers={"Accept": OPENMETRICS} if openmetrics else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        return r.headers.get("Content-Type", ""), r.read().decode("utf-8")


def samples(text) -> dict:
    """Parse Prometheus text into {(sample_name, frozenset(labels.items())): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def families(text) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def types(text) -> dict:
    """{family name: type} from the ``# TYPE`` lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def value(snap: dict, name: str, **labels) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in snap.items() if n == name and want <= set(ls))


def metric_snapshot(srv) -> dict:
    return samples(scrape(srv.metrics_url)[1])


def monotonic_samples(snap: dict, type_map: dict) -> dict:
    """The samples that must never go down: counters and histogram buckets/_sum/_count."""
    out = {}
    for (name, ls), v in snap.items():
        base = re.sub(r"(_total|_bucket|_sum|_count)$", "", name)
        t = type_map.get(name) or type_map.get(base)
        if t in ("counter", "histogram") or name.endswith("_total"):
            out[(name, ls)] = v
    return out


# -- ctl / top ---------------------------------------------------------------------------
def ferrocorn_cli() -> list[str]:
    override = os.environ.get("FERROCORN_CMD")
    return override.split() if override else [sys.executable, "-m", "ferrocorn"]


def top_under_load(sock, request, interval=0.5, iterations=2):
    """Run ``ferrocorn top`` in plain mode for ``iterations`` frames while a thread calls
    ``request(session)`` in a loop (each call asserts its own answer); returns the
    CompletedProcess, checked to have exited 0."""
    import requests  # noqa: PLC0415 (only the tests that watch top under load need it)

    stop = threading.Event()
    failures: list[BaseException] = []

    def load():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    request(s)
                except BaseException as e:  # noqa: BLE001 (reported below)
                    failures.append(e)
                    return

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        p = subprocess.run(
            ferrocorn_cli() + ["top", "--socket", str(sock), "--interval", str(interval),
                               "--iterations", str(iterations)],
            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
        )
    finally:
        stop.set()
        loader.join(10)
    assert not failures, failures[0]
    assert p.returncode == 0, p.stderr
    return p


def ctl(sock, *words, json_out=False, timeout=15.0, check=True):
    """Run ``ferrocorn ctl --socket SOCK [--json] WORDS``; returns CompletedProcess
    (with ``.data`` = the parsed JSON reply when ``json_out``)."""
    argv = ferrocorn_cli() + ["ctl", "--socket", str(sock)] + (["--json"] if json_out else []) + list(words)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"{argv} -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    p.data = json.loads(p.stdout) if json_out and p.stdout.strip() else None
    return p
