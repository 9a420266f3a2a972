"""The Prometheus endpoint (``--metrics-bind``): counts, worker gauges, monotonic counters,
exposition validity (prometheus_client parsers, promtool) and app-defined metrics."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from apps.obs.obshelpers import (
    body_pid,
    ctl,
    families,
    get,
    metric_snapshot,
    monotonic_samples,
    samples,
    scrape,
    start,
    types,
    value,
    wait_until,
    wait_workers,
)
from wire import Conn

pytest.importorskip("prometheus_client", reason="pip install prometheus_client (requirements-test.txt)")

WORKER_STATES = ("booting", "idle", "busy", "retiring")
RESTART_REASONS = ("max_requests", "timeout", "memory", "crash", "reload", "scale")

# name -> type in the Prometheus 0.0.4 text, from docs/metrics.md
BUILTIN = {
    "ferrocorn_requests_total": "counter",
    "ferrocorn_request_duration_seconds": "histogram",
    "ferrocorn_request_body_bytes_total": "counter",
    "ferrocorn_response_body_bytes_total": "counter",
    "ferrocorn_requests_in_flight": "gauge",
    "ferrocorn_open_connections": "gauge",
    "ferrocorn_connections_total": "counter",
    "ferrocorn_app_exceptions_total": "counter",
    "ferrocorn_workers": "gauge",
    "ferrocorn_workers_target": "gauge",
    "ferrocorn_worker_restarts_total": "counter",
    "ferrocorn_worker_resident_memory_bytes": "gauge",
    "ferrocorn_worker_cpu_seconds_total": "counter",
    "ferrocorn_worker_uptime_seconds": "gauge",
    "ferrocorn_listen_queue_depth": "gauge",
    "ferrocorn_start_time_seconds": "gauge",
    "ferrocorn_build_info": "gauge",
}


def live_workers(snap) -> float:
    return sum(value(snap, "ferrocorn_workers", state=s) for s in WORKER_STATES)


def wait_metric(srv, pred, timeout=10.0, msg="metrics condition"):
    """Scrape until ``pred(snapshot)`` holds; returns that snapshot."""
    return wait_until(lambda: (lambda s: s if pred(s) else None)(metric_snapshot(srv)), timeout, msg, 0.1)


# -- 1. exact counts ---------------------------------------------------------------------
def test_exact_request_counts_and_status_split(server):
    srv = start(server, workers=2)
    wait_workers(srv, 2)
    before = metric_snapshot(srv)
    plan = {"/": 200, "/missing": 404, "/error": 500}
    mix = ["/"] * 20 + ["/missing"] * 10 + ["/error"] * 7  # N = 37
    n = len(mix)
    for path in mix[::2] + mix[1::2]:  # interleave
        status, _ = get(srv.port, path)
        assert status == plan[path]
    wait_metric(
        srv,
        lambda s: value(s, "ferrocorn_request_duration_seconds_count")
        - value(before, "ferrocorn_request_duration_seconds_count")
        >= n,
        msg=f"duration count +{n}",
    )
    time.sleep(0.3)
    after = metric_snapshot(srv)  # nothing else may trickle in

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ferrocorn_requests_total") == n
    assert delta("ferrocorn_request_duration_seconds_count") == n
    assert value(after, "ferrocorn_request_duration_seconds_bucket", le="+Inf") - value(
        before, "ferrocorn_request_duration_seconds_bucket", le="+Inf"
    ) == n
    assert delta("ferrocorn_request_duration_seconds_sum") > 0
    for code, count in (("200", 20), ("404", 10), ("500", 7)):
        assert delta("ferrocorn_requests_total", method="GET", code=code) == count, code
    # the scrapes themselves are not counted as requests
    assert delta("ferrocorn_connections_total") == n
    assert delta("ferrocorn_app_exceptions_total") == 0  # /error returns 500, it does not raise


def test_app_exception_counted(server):
    srv = start(server, workers=1)
    before = metric_snapshot(srv)
    for _ in range(3):
        assert get(srv.port, "/raise")[0] == 500
    after = wait_metric(
        srv,
        lambda s: value(s, "ferrocorn_app_exceptions_total") - value(before, "ferrocorn_app_exceptions_total") >= 3,
        msg="3 app exceptions",
    )
    assert value(after, "ferrocorn_app_exceptions_total") - value(before, "ferrocorn_app_exceptions_total") == 3
    assert value(after, "ferrocorn_requests_total", code="500") - value(before, "ferrocorn_requests_total", code="500") == 3


# -- 2. workers gauge follows TTIN / TTOU / ctl ----------------------------------------------
def _settled(target):
    def pred(s):
        return value(s, "ferrocorn_workers_target") == target and live_workers(s) == target and value(
            s, "ferrocorn_workers", state="booting"
        ) == 0

    return pred


def test_workers_gauge_follows_ttin_ttou(server):
    srv = start(server, workers=2)
    wait_metric(srv, _settled(2), msg="2 workers")
    srv.send_signal(signal.SIGTTIN)
    s = wait_metric(srv, _settled(3), timeout=15, msg="3 workers after TTIN")
    assert len(wait_workers(srv, 3)) == 3
    assert len([k for k in s if k[0] == "ferrocorn_worker_resident_memory_bytes"]) == 3
    srv.send_signal(signal.SIGTTOU)
    wait_metric(srv, _settled(2), timeout=15, msg="2 workers after TTOU")
    pids = wait_workers(srv, 2)
    wait_metric(
        srv,
        lambda s: {dict(k[1])["pid"] for k in s if k[0] == "ferrocorn_worker_resident_memory_bytes"}
        == {str(p) for p in pids},
        msg="per-pid series follow the live workers",
    )


def test_workers_gauge_follows_ctl_add_remove(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    srv = start(server, workers=2, ctl=sock)
    wait_metric(srv, _settled(2), msg="2 workers")
    ctl(sock, "workers", "add", "1")
    wait_metric(srv, _settled(3), timeout=15, msg="3 workers after ctl workers add 1")
    ctl(sock, "workers", "remove", "1")
    wait_metric(srv, _settled(2), timeout=15, msg="2 workers after ctl workers remove 1")
    wait_workers(srv, 2)


# -- 3. counters never go backwards --------------------------------------------------------
def _assert_monotonic(before_text, after_text):
    tmap = types(before_text) | types(after_text)
    before = monotonic_samples(samples(before_text), tmap)
    after = monotonic_samples(samples(after_text), tmap)
    assert before, "no counter samples found"
    went_back, vanished = [], []
    for key, v in before.items():
        labels = dict(key[1])
        if key not in after:
            if "pid" not in labels:  # per-pid series legitimately leave with their worker
                vanished.append(key)
            continue
        if after[key] < v:
            went_back.append((key[0], labels, v, after[key]))
    assert not vanished, f"counter series disappeared: {vanished}"
    assert not went_back, f"counters went backwards (name, labels, before, after): {went_back}"


def test_counters_monotonic_across_max_requests_recycle(server):
    srv = start(server, "--max-requests", "5", workers=2)
    wait_workers(srv, 2)
    for _ in range(4):  # < 5 per worker: no recycling yet
        assert get(srv.port, "/")[0] == 200
    wait_metric(srv, lambda s: value(s, "ferrocorn_requests_total") == 4, msg="4 requests counted")
    before_text = scrape(srv.metrics_url)[1]
    for i in range(26):
        assert get(srv.port, ("/missing", "/order?kind=book", "/")[i % 3])[0] in (200, 404)
    wait_metric(
        srv,
        lambda s: value(s, "ferrocorn_worker_restarts_total", reason="max_requests") >= 3
        and value(s, "ferrocorn_requests_total") >= 30,
        timeout=15,
        msg="workers recycled by max_requests",
    )
    wait_workers(srv, 2)
    after_text = scrape(srv.metrics_url)[1]
    _assert_monotonic(before_text, after_text)
    after = samples(after_text)
    # requests served by recycled workers are still counted
    assert value(after, "ferrocorn_requests_total") == 30
    assert value(after, "ferrocorn_request_duration_seconds_count") == 30
    assert value(after, "ferrocorn_worker_restarts_total", reason="crash") == 0
    assert value(after, "orders_total", kind="book") == 9, "app counters of recycled workers were lost"


def test_counters_monotonic_across_worker_kill(server):
    srv = start(server, workers=2)
    wait_workers(srv, 2)
    served = {}
    for i in range(10):  # app counters must survive the kill too
        status, body = get(srv.port, "/order?kind=book" if i % 2 else "/")
        assert status == 200
        served[body_pid(body)] = served.get(body_pid(body), 0) + 1
    wait_metric(srv, lambda s: value(s, "ferrocorn_requests_total") == 10, msg="10 requests counted")
    before_text = scrape(srv.metrics_url)[1]
    before = samples(before_text)
    victim = max(served, key=served.get)  # the worker that served the most
    os.kill(victim, signal.SIGKILL)
    wait_metric(
        srv,
        lambda s: value(s, "ferrocorn_worker_restarts_total", reason="crash")
        > value(before, "ferrocorn_worker_restarts_total", reason="crash")
        and live_workers(s) == 2
        and value(s, "ferrocorn_workers", state="booting") == 0,
        timeout=15,
        msg="crash restart counted and worker replaced",
    )
    pids = wait_workers(srv, 2)
    assert victim not in pids
    after_text = scrape(srv.metrics_url)[1]
    _assert_monotonic(before_text, after_text)
    after = samples(after_text)
    assert value(after, "ferrocorn_requests_total") == 10, "the killed worker's requests were lost"
    assert value(after, "ferrocorn_request_duration_seconds_count") == 10
    assert value(after, "orders_total", kind="book") == 5, "the killed worker's app counter was lost"
    assert not any(
        k[0] == "ferrocorn_worker_resident_memory_bytes" and dict(k[1])["pid"] == str(victim) for k in after
    ), "per-pid series of the killed worker still exposed"


# -- 4. exposition validity ------------------------------------------------------------------
@pytest.fixture
def busy_server(server):
    srv = start(server, workers=2)
    wait_workers(srv, 2)
    for path in ("/", "/missing", "/error", "/raise", "/order?kind=book", "/order?kind=pen"):
        get(srv.port, path)
    wait_metric(srv, lambda s: value(s, "ferrocorn_requests_total") == 6, msg="6 requests counted")
    return srv


def test_prometheus_text_parses_and_has_builtin_families(busy_server):
    ctype, text = scrape(busy_server.metrics_url)
    assert ctype.startswith("text/plain"), ctype
    assert "version=0.0.4" in ctype, ctype
    fams = families(text)  # raises on a syntax error
    tmap = types(text)
    for name, typ in BUILTIN.items():
        assert tmap.get(name) == typ, (name, tmap.get(name))
    snap = samples(text)
    for st in WORKER_STATES:
        assert ("ferrocorn_workers", frozenset({("state", st)})) in snap, st
    for r in RESTART_REASONS:
        assert ("ferrocorn_worker_restarts_total", frozenset({("reason", r)})) in snap, r
    buckets = sorted(
        float(dict(k[1])["le"]) for k in snap if k[0] == "ferrocorn_request_duration_seconds_bucket"
    )
    assert buckets == [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, float("inf")]
    assert [v for (n, ls), v in snap.items() if n == "ferrocorn_build_info"] == [1.0]
    pids = {str(p) for p in wait_workers(busy_server, 2)}
    rss = {dict(k[1])["pid"]: v for k, v in snap.items() if k[0] == "ferrocorn_worker_resident_memory_bytes"}
    assert set(rss) == pids and all(v > 1_000_000 for v in rss.values()), rss
    assert abs(value(snap, "ferrocorn_start_time_seconds") - time.time()) < 120
    assert "ferrocorn_requests_total" in fams or "ferrocorn_requests" in fams


def test_openmetrics_parses_and_ends_with_eof(busy_server):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    ctype, text = scrape(busy_server.metrics_url, openmetrics=True)
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert text.endswith("# EOF\n"), text[-200:]
    fams = {f.name: f for f in om_parse(text)}  # raises on any violation
    assert fams["ferrocorn_requests"].type == "counter"
    assert fams["ferrocorn_request_duration_seconds"].type == "histogram"
    assert fams["ferrocorn_request_duration_seconds"].unit == "seconds"
    assert fams["ferrocorn_build"].type == "info"
    assert fams["orders"].type == "counter"
    total = sum(s.value for s in fams["ferrocorn_requests"].samples if s.name == "ferrocorn_requests_total")
    assert total == 6


def test_promtool_check_metrics(busy_server):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    _, text = scrape(busy_server.metrics_url)
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    complaints = (p.stdout + p.stderr).strip()
    assert p.returncode == 0 and not complaints, f"promtool exit {p.returncode}:\n{complaints}"


# -- 6. app-defined metrics summed over the workers -------------------------------------------
def test_app_metrics_add_up_over_workers(server):
    srv = start(server, workers=2)
    wait_workers(srv, 2)
    pids = []
    # Hold one worker on a half-sent request (sync workers serve one connection at a time),
    # so the next requests must be served by the other worker; then finish the held one.
    with Conn(srv.port, timeout=10) as held:
        held.send(b"GET /order?kind=book HTTP/1.1\r\nHost: localhost\r\n")
        time.sleep(0.3)
        for _ in range(5):
            status, body = get(srv.port, "/order?kind=book")
            assert status == 200
            pids.append(body_pid(body))
        held.send(b"Connection: close\r\n\r\n")
        r = held.read_response()
        assert r.status == 200
        pids.append(body_pid(r.body))
    for _ in range(14):
        status, body = get(srv.port, "/order?kind=book")
        assert status == 200
        pids.append(body_pid(body))
    assert len(set(pids)) == 2, f"both workers must serve: {pids}"
    n = len(pids)
    get(srv.port, "/order?kind=pen")
    wait_metric(srv, lambda s: value(s, "ferrocorn_requests_total") == n + 1, msg="requests counted")
    _, text = scrape(srv.metrics_url)
    snap = samples(text)
    tmap = types(text)
    assert tmap.get("orders_total") == "counter"
    assert tmap.get("obs_queue_length") == "gauge"
    assert tmap.get("obs_checkout_seconds") == "histogram"
    assert snap[("orders_total", frozenset({("kind", "book")}))] == n
    assert snap[("orders_total", frozenset({("kind", "pen")}))] == 1
    assert value(snap, "obs_queue_length") == n + 1  # each worker's gauge, summed
    assert value(snap, "obs_checkout_seconds_count") == n + 1
    assert value(snap, "obs_checkout_seconds_sum") == pytest.approx(0.27 * (n + 1))
    assert value(snap, "obs_checkout_seconds_bucket", le="0.1") == 0
    assert value(snap, "obs_checkout_seconds_bucket", le="0.5") == n + 1
    assert value(snap, "obs_checkout_seconds_bucket", le="+Inf") == n + 1
    # one series per label set for the whole server, not one per worker
    assert len([k for k in snap if k[0] == "orders_total"]) == 2
