"""The ``gevent`` worker class: monkey-patching at worker boot, one greenlet per request,
``--worker-connections`` as the cap. Skipped until ``-k gevent`` starts (capability probe below);
the eventlet error is checked either way.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import threading
import time

import pytest
import requests

from conftest import APPS_DIR, ServerFactory
from wire import Conn, request_bytes

CLASSES = APPS_DIR / "classes"


def _probe_gevent() -> str | None:
    """None if ``-k gevent`` starts and serves, else why not."""
    try:
        import gevent  # noqa: F401
    except ImportError:
        return "gevent is not installed"
    factory = ServerFactory()
    try:
        try:
            srv = factory("wsgi_app:app", "-k", "gevent", cwd=CLASSES)
        except AssertionError as exc:
            text = str(exc)
            if "not supported" in text:
                return "-k gevent is not supported yet by this ferrocorn build"
            return f"-k gevent did not start: {text[-300:]}"
        # "Listening at" comes from the master: make sure the worker really serves
        try:
            r = requests.get(srv.url + "/", timeout=5)
        except requests.RequestException as exc:
            return f"-k gevent worker does not serve: {exc}"
        if r.status_code != 200:
            return f"-k gevent worker answered {r.status_code}: {srv.stderr_text()[-300:]}"
        return None
    finally:
        factory.stop_all()


_WHY_NOT = _probe_gevent()
needs_gevent = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")


def gevent_srv(server, *args, **kw):
    kw.setdefault("cwd", CLASSES)
    return server("gevent_app:app", "-k", "gevent", *args, **kw)


def _hammer(url, clients, timeout=30):
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(requests.get, url, timeout=timeout) for _ in range(clients)]
        return [f.result() for f in futures]


class _SlowUpstream(http.server.ThreadingHTTPServer):
    """A loopback HTTP server whose handler sleeps, counting how many requests overlap."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, delay):
        self.delay = delay
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0
        self.count = 0
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.now += 1
            srv.count += 1
            srv.max = max(srv.max, srv.now)
        try:
            time.sleep(srv.delay)
        finally:
            with srv.lock:
                srv.now -= 1
        body = f"hello from upstream {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    srv = _SlowUpstream(delay=0.5)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


# -- always runs --------------------------------------------------------------------------------


def test_eventlet_is_refused_pointing_at_gevent(server):
    srv = server("wsgi_app:app", "-k", "eventlet", cwd=CLASSES, expect_fail=True)
    assert srv.returncode != 0
    err = srv.stderr_text()
    assert "eventlet" in err and "not supported" in err and "gevent" in err


# -- gevent -------------------------------------------------------------------------------------


@needs_gevent
def test_hundred_sleeping_requests_are_all_in_flight_in_one_worker(server):
    srv = gevent_srv(server, "-w", "1")
    t0 = time.monotonic()
    responses = _hammer(srv.url + "/sleep?s=0.5", 100)
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 and r.text == "slept" for r in responses)
    max_seen, now, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert int(max_seen) == 100, (max_seen, elapsed)
    assert int(now) == 0


@needs_gevent
def test_monkey_patching_happens_before_the_app_import(server):
    srv = gevent_srv(server, "-w", "1")
    info = requests.get(srv.url + "/patched", timeout=10).json()
    assert info["at_import"]["socket"] is True, info
    assert info["at_import"]["time"] is True, info
    assert info["at_import"]["threading"] is True, info
    assert info["at_import"]["socket_class"].startswith("gevent"), info


@needs_gevent
def test_outbound_http_through_patched_sockets_works_and_overlaps(server, upstream):
    srv = gevent_srv(server, "-w", "1")
    port = upstream.server_address[1]
    r = requests.get(srv.url + f"/fetch?port={port}&path=one", timeout=10)
    assert (r.status_code, r.text) == (200, "upstream:hello from upstream /one")

    t0 = time.monotonic()
    responses = _hammer(srv.url + f"/fetch?port={port}", 40)
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 and r.text.startswith("upstream:hello") for r in responses)
    fetch_max, fetch_now, _pid = requests.get(srv.url + "/fetchmax", timeout=10).text.split()
    # blocking urllib calls in one worker process overlapped: only possible on patched sockets
    assert int(fetch_max) >= 35, (fetch_max, elapsed)
    assert upstream.max >= 35, (upstream.max, elapsed)
    assert int(fetch_now) == 0


@needs_gevent
def test_worker_connections_caps_concurrent_requests(server):
    srv = gevent_srv(server, "-w", "1", "--worker-connections", "10")
    responses = _hammer(srv.url + "/sleep?s=0.3", 30)
    assert all(r.status_code == 200 for r in responses)
    max_seen, _now, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert int(max_seen) == 10


@needs_gevent
def test_gevent_exception_is_500_and_the_worker_keeps_serving(server):
    srv = gevent_srv(server, "-w", "1")
    r = requests.get(srv.url + "/fetch?port=notaport", timeout=10)
    assert r.status_code == 500
    assert requests.get(srv.url + "/sleep?s=0", timeout=10).text == "slept"
    srv.wait_log(r"ValueError")


@needs_gevent
def test_gevent_with_several_workers_and_graceful_stop(server):
    srv = gevent_srv(server, "-w", "2")
    responses = _hammer(srv.url + "/sleep?s=0.2", 20)
    assert all(r.status_code == 200 for r in responses)
    # a request in flight at TERM completes (graceful stop), then the master exits 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(requests.get, srv.url + "/sleep?s=1", timeout=10)
        time.sleep(0.3)
        rc = srv.stop()
        assert fut.result().text == "slept"
    assert rc == 0


@needs_gevent
def test_preload_app_still_gets_patched_blocking_calls(server):
    # with --preload the app is imported in the master, before any worker patches; the worker
    # patches at boot anyway, so module-attribute calls (time.sleep) cooperate
    srv = gevent_srv(server, "-w", "1", "--preload")
    info = requests.get(srv.url + "/patched", timeout=10).json()
    assert info["now"]["socket"] is True and info["now"]["time"] is True, info
    responses = _hammer(srv.url + "/sleep?s=0.5", 30)
    assert all(r.status_code == 200 for r in responses)
    max_seen, _now, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert int(max_seen) == 30


@needs_gevent
def test_a_short_sleep_wakes_the_hub_when_due_not_at_the_next_millisecond(server):
    # libev's epoll backend sleeps whole milliseconds (at least one for any pending timer), so
    # on a plain gevent hub every 0.3 ms sleep lasts over 1 ms; ferrocorn's hub loop wakes at
    # the timer's deadline. The median of 21 sleeps leaves room for a noisy machine.
    srv = gevent_srv(server, "-w", "1")
    info = requests.get(srv.url + "/shortsleeps?n=21&s=0.0003", timeout=10).json()
    assert info["loop"] == "PreciseTimerLoop", info
    assert 0.3 <= info["median_ms"] < 0.9, info


@needs_gevent
def test_an_app_that_forks_gets_a_timer_wake_up_of_its_own_in_the_child(server):
    # A forked child shares its parent's timerfd; setting or draining it there would steal the
    # parent's wake-ups. The child's loop makes its own, and both keep precise short sleeps.
    srv = gevent_srv(server, "-w", "1")
    info = requests.get(srv.url + "/forksleeps", timeout=20).json()
    assert info["child"]["own_wake"] is True, info
    assert info["child"]["wake_fd"] != info["parent"]["wake_fd"], info
    assert info["parent"]["median_ms"] < 0.9 and info["child"]["median_ms"] < 0.9, info
    assert requests.get(srv.url + "/shortsleeps", timeout=10).json()["median_ms"] < 0.9


@needs_gevent
def test_context_variables_do_not_leak_between_requests_on_reused_greenlets(server):
    # Greenlets are reused across requests (and across connections): each request must still
    # start with fresh context variables, as it would in a fresh greenlet.
    srv = gevent_srv(server, "-w", "1")
    with requests.Session() as session:
        seen = [session.get(f"{srv.url}/context?id=a{i}", timeout=10).text for i in range(20)]
    seen += [requests.get(f"{srv.url}/context?id=b{i}", timeout=10).text for i in range(20)]
    seen += [r.text for r in _hammer(srv.url + "/context?id=c", 30)]
    assert seen == ["unset"] * len(seen)


@needs_gevent
def test_a_client_slow_to_send_its_100_continue_body_does_not_stall_the_hub(server):
    # The app's first wsgi.input read sends "100 Continue" and waits for the body: that wait
    # must let the hub run other greenlets (as a patched socket read does under gunicorn), not
    # freeze the worker until the client sends or the I/O timeout fires.
    srv = gevent_srv(server, "-w", "1")
    with Conn(srv.port, timeout=30) as slow:
        slow.send(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        assert slow.read_until(b"\r\n\r\n", timeout=5).startswith(b"HTTP/1.1 100 Continue")
        started = time.monotonic()
        other = requests.get(srv.url + "/context?id=x", timeout=20)
        waited = time.monotonic() - started
        assert other.status_code == 200
        assert waited < 3, f"a request waited {waited:.1f} s behind a stalled 100-continue body"
        slow.send(b"0123456789")
        resp = slow.read_response(timeout=10)
    assert resp.status == 200 and resp.body == b"10"


@needs_gevent
def test_a_client_slow_to_read_a_write_response_does_not_stall_the_hub(server):
    # write() into a client that reads nothing fills the socket buffers; the greenlet must then
    # wait cooperatively while other requests are served.
    srv = gevent_srv(server, "-w", "1")
    with Conn(srv.port, timeout=60) as slow:
        slow.send(request_bytes("GET", "/write?mib=32"))
        time.sleep(0.5)  # the app is blocked on a full socket by now
        started = time.monotonic()
        other = requests.get(srv.url + "/context?id=y", timeout=20)
        waited = time.monotonic() - started
        assert other.status_code == 200
        assert waited < 3, f"a request waited {waited:.1f} s behind a write() to a slow reader"
        resp = slow.read_response(timeout=60)
    assert resp.status == 200 and len(resp.body) == 32 * 1024 * 1024
