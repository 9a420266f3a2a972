"""The ``asgi`` worker class, checked by behaviour over real sockets: lifespan order and state,
streamed responses, request bodies, ``http.disconnect``, concurrency on one loop, errors, loop and
lifespan options, and the worker-class mismatch errors.

Apps live in ``tests/apps/classes``; events are written to ``$STATE_DIR`` by the app.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
import socket
import time

import pytest
import requests

from conftest import APPS_DIR, wait_for_file
from procs import children, wait_until
from wire import Conn, request_bytes

CLASSES = APPS_DIR / "classes"


def asgi(server, app="asgi_app:app", *args, **kw):
    kw.setdefault("cwd", CLASSES)
    return server(app, "-k", "asgi", *args, **kw)


def events(state_dir):
    path = state_dir / "events"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _hammer(url, clients, timeout=30):
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(requests.get, url, timeout=timeout) for _ in range(clients)]
        return [f.result() for f in futures]


# -- lifespan -----------------------------------------------------------------------------------


def test_lifespan_startup_runs_before_the_first_request_and_shutdown_after_term(server, state_dir):
    # a slow startup: a request sent as soon as the socket listens must wait for startup.complete
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}", "-e", "STARTUP_DELAY=1")
    r = requests.get(srv.url + "/scope", timeout=10)
    assert r.status_code == 200
    assert r.json()["state"] == {"db": "connected", "counter": 41}
    ev = events(state_dir)
    kinds = [e[0] for e in ev]
    assert kinds[:2] == ["startup", "request"], ev
    assert "shutdown" not in kinds
    worker_pid = ev[0][1]
    assert ev[1][2] == worker_pid  # same worker ran startup and the request

    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15) == 0
    ev = events(state_dir)
    assert [e[0] for e in ev][-1] == "shutdown", ev
    assert ev[-1][1] == worker_pid
    assert [e[0] for e in ev].count("shutdown") == 1


def test_term_lets_in_flight_requests_finish_before_lifespan_shutdown(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(requests.get, srv.url + "/sleep?s=1", timeout=10)
        assert wait_for_file(state_dir / "events", predicate=lambda t: "request /sleep" in t)
        srv.send_signal(signal.SIGTERM)
        r = fut.result()
        done_at = time.time()
    assert (r.status_code, r.text) == (200, "slept")
    assert srv.wait_exit(15) == 0
    shutdown = [e for e in events(state_dir) if e[0] == "shutdown"]
    assert len(shutdown) == 1
    assert float(shutdown[0][2]) >= done_at - 0.1  # after the response went out


def test_each_worker_runs_its_own_lifespan(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "2", "-e", f"STATE_DIR={state_dir}")
    text = wait_for_file(state_dir / "events", timeout=10, predicate=lambda t: t.count("startup") >= 2)
    starts = [line.split() for line in (text or "").splitlines() if line.startswith("startup")]
    assert len(starts) == 2 and starts[0][1] != starts[1][1], text
    srv.stop()
    assert srv.returncode == 0
    shutdowns = [e for e in events(state_dir) if e[0] == "shutdown"]
    assert sorted(e[1] for e in shutdowns) == sorted(e[1] for e in starts)


def test_lifespan_state_is_copied_into_every_scope(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}")
    with requests.Session() as s:
        first = s.get(srv.url + "/scope", timeout=10).json()
        assert first["has_state"] and first["state"] == {"db": "connected", "counter": 41}
        mutated = s.get(srv.url + "/state-mutate", timeout=10).json()
        assert mutated["state"] == {"db": "connected", "counter": 42, "touched": True}
        # the mutation was on the request's copy: the next request sees the lifespan state again
        again = s.get(srv.url + "/scope", timeout=10).json()
        assert again["state"] == {"db": "connected", "counter": 41}


def test_lifespan_off_skips_startup(server, state_dir):
    srv = asgi(server, "asgi_app:app", "--asgi-lifespan", "off", "-e", f"STATE_DIR={state_dir}")
    assert requests.get(srv.url + "/", timeout=10).text == "Hello, World!"
    srv.stop()
    kinds = [e[0] for e in events(state_dir)]
    assert "startup" not in kinds and "shutdown" not in kinds
    assert kinds == ["request"]


def test_lifespan_auto_tolerates_an_app_without_lifespan(server):
    srv = asgi(server, "no_lifespan:app")
    r = requests.get(srv.url + "/", timeout=10)
    assert r.status_code == 200
    assert srv.stop() == 0


def test_lifespan_on_requires_support(server):
    srv = asgi(server, "no_lifespan:app", "--asgi-lifespan", "on", expect_fail=True)
    assert srv.returncode == 3, srv.stderr_text()[-2000:]
    assert "lifespan" in srv.stderr_text().lower()


def test_lifespan_startup_failed_exits_3_with_the_message(server):
    srv = asgi(server, "lifespan_fail:app", "--asgi-lifespan", "on", expect_fail=True)
    assert srv.returncode == 3, srv.stderr_text()[-2000:]
    assert "database unreachable" in srv.stderr_text()


# -- scope --------------------------------------------------------------------------------------


def test_http_scope_fields_and_root_path(server):
    srv = asgi(server, "asgi_app:app", "--root-path", "/api")
    r = requests.get(srv.url + "/scope?a=1&b=%20x", headers={"X-Custom": "Yes"}, timeout=10)
    scope = r.json()
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    # ASGI: path includes root_path (as uvicorn's --root-path does); raw_path is the bytes received
    assert scope["path"] == "/api/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20x"
    assert scope["root_path"] == "/api"
    assert scope["scheme"] == "http"
    assert scope["server"] == ["127.0.0.1", srv.port]
    assert scope["client"][0] == "127.0.0.1"
    headers = dict(scope["headers"])
    assert headers["x-custom"] == "Yes"  # names lowercased, values as sent
    assert all(k == k.lower() for k, _ in scope["headers"])


def test_keep_alive_serves_several_requests_on_one_connection(server):
    srv = asgi(server)
    with Conn(srv.port) as c:
        for _ in range(3):
            c.send(request_bytes("GET", "/"))
            resp = c.read_response()
            assert (resp.status, resp.body) == (200, b"Hello, World!")
        assert not c.is_closed(0.3)


def test_an_idle_keep_alive_connection_is_closed_by_the_runtimes_timer(server):
    # Nothing else happens on the worker: only the loop's periodic look at the runtime's
    # timers (server/loop_driver.rs) can fire the keep-alive timeout.
    srv = asgi(server, "asgi_app:app", "-w", "1", "--keep-alive", "1")
    with Conn(srv.port) as c:
        c.send(request_bytes("GET", "/"))
        assert c.read_response().status == 200
        assert c.is_closed(6), "idle keep-alive connection was not closed after --keep-alive 1"


def test_head_request_gets_headers_only(server):
    srv = asgi(server)
    with Conn(srv.port) as c:
        c.send(request_bytes("HEAD", "/"))
        resp = c.read_response(head=True)
        assert resp.status == 200 and resp.header("content-length") == "13"
        c.send(request_bytes("GET", "/"))
        assert c.read_response().body == b"Hello, World!"  # no stray body bytes in between


@pytest.mark.parametrize("loop,expected", [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_asgi_loop_option(server, loop, expected):
    if expected == "uvloop":
        pytest.importorskip("uvloop")
    srv = asgi(server, "asgi_app:app", "--asgi-loop", loop)
    text = requests.get(srv.url + "/loop", timeout=10).text
    assert text.startswith(expected), text


# -- bodies -------------------------------------------------------------------------------------


def test_streamed_response_reaches_the_client_before_the_app_finishes(server):
    srv = asgi(server, "asgi_app:app", "-w", "1")
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("GET", "/gate"))
        head = c.read_until(b"first\n", timeout=5)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"last" not in head
        # the app is parked on an asyncio.Event: only another request can let it finish
        assert requests.get(srv.url + "/open", timeout=5).text == "opened"
        resp = c.read_response(timeout=10)
    assert resp.framing == "chunked"
    assert resp.body == b"first\nlast\n"


def test_streamed_chunks_arrive_as_sent(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}")
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("GET", "/stream?n=3&delay=0.6"))
        c.read_until(b"chunk-0\n", timeout=5)
        got_first = time.time()
        resp = c.read_response(timeout=10)
    assert resp.body == b"chunk-0\nchunk-1\nchunk-2\n"
    assert resp.header("content-length") is None
    chunk_times = {e[1]: float(e[3]) for e in events(state_dir) if e[0] == "chunk"}
    # the client held chunk 0 before the app even produced chunk 2
    assert got_first < chunk_times["2"], (got_first, chunk_times)


def test_large_post_body_is_echoed(server):
    srv = asgi(server)
    body = os.urandom(8 * 1024 * 1024 + 17)
    r = requests.post(srv.url + "/echo", data=body, timeout=30)
    assert r.status_code == 200
    assert r.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()
    assert len(r.content) == len(body) and r.content == body


def test_chunked_request_body_is_echoed(server):
    srv = asgi(server)
    parts = [os.urandom(n) for n in (1, 1000, 65536, 3)]

    def gen():
        yield from parts

    r = requests.post(srv.url + "/echo", data=gen(), timeout=30)
    assert r.status_code == 200
    assert r.content == b"".join(parts)


@pytest.mark.parametrize("chunked", [False, True])
def test_expect_100_continue_gets_100_then_the_body_reaches_the_app(server, chunked):
    # curl sends `Expect: 100-continue` for bodies over 1 KiB and waits for the 100 first.
    srv = asgi(server, "asgi_app:app", "-w", "1")
    body = bytes(range(256)) * 20
    wire_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    framing = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(len(body)))]
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("POST", "/echo", headers=[("Expect", "100-continue"), *framing]))
        interim = c.read_response(interim=True)
        assert interim.status == 100
        c.send(wire_body)
        resp = c.read_response()
        assert resp.status == 200
        assert resp.body == body
        assert resp.header("x-body-sha256") == hashlib.sha256(body).hexdigest()
        # the body did not leak into the next request on this connection
        c.send(request_bytes("GET", "/"))
        assert c.read_response().body == b"Hello, World!"


def test_request_body_reaches_the_app_while_the_client_is_still_sending(server, state_dir):
    # ASGI streams request bodies: the app gets the first part (more_body True) before the
    # client has sent the rest, here only after the app reported having received it.
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}")
    first, second = b"a" * 3000, b"b" * 5000
    for chunked in (False, True):
        (state_dir / "pieces").unlink(missing_ok=True)
        if chunked:
            head = request_bytes("POST", "/pieces", headers=[("Transfer-Encoding", "chunked")])
            part1, part2 = b"%x\r\n%s\r\n" % (len(first), first), b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second)
        else:
            head = request_bytes("POST", "/pieces", headers=[("Content-Length", str(len(first) + len(second)))])
            part1, part2 = first, second
        with Conn(srv.port, timeout=10) as c:
            c.send(head + part1)
            text = wait_for_file(state_dir / "pieces", timeout=10, predicate=lambda t: "piece" in t)
            assert text is not None and "piece 3000 1" in text, text
            c.send(part2)
            resp = c.read_response()
        total, digest = resp.body.decode().split()
        assert int(total) == len(first) + len(second)
        assert digest == hashlib.sha256(first + second).hexdigest()


def test_full_duplex_app_echoes_body_pieces_while_its_response_streams(server):
    # The response has started before the body is complete: the connection keeps feeding the
    # body to receive() while it streams the response.
    srv = asgi(server, "asgi_app:app", "-w", "1")
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("POST", "/duplex", headers=[("Content-Length", "10")]))
        c.read_until(b"ready\n", timeout=5)
        c.send(b"hello")
        c.read_until(b"got:hello\n", timeout=5)
        c.send(b"world")
        c.read_until(b"got:world\n", timeout=5)
        c.read_until(b"0\r\n\r\n", timeout=5)  # the response ends with the body
        c.buf = b""
        c.send(request_bytes("GET", "/"))  # and the connection is still usable
        assert c.read_response().body == b"Hello, World!"


def test_a_slow_upload_does_not_count_against_the_request_deadline(server, state_dir):
    # --timeout 1: the client sends its body in 5 pieces 0.4 s apart (each gap within the I/O
    # timeout, 1.6 s in all); the deadline starts when the body is complete, so the app still
    # answers (no 504, no recycled worker).
    srv = asgi(server, "asgi_app:app", "-w", "1", "-t", "1", "-e", f"STATE_DIR={state_dir}")
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("POST", "/pieces", headers=[("Content-Length", "5000")]) + b"x" * 1000)
        for _ in range(4):
            time.sleep(0.4)
            c.send(b"y" * 1000)
        resp = c.read_response()
    assert resp.status == 200 and resp.body.split()[0] == b"5000"
    assert "timed out" not in srv.stderr_text()


def _serving_pid(srv):
    """The pid of the worker that answers (None while none does)."""
    try:
        return int(requests.get(srv.url + "/max", timeout=5).text.split()[2])
    except (requests.RequestException, ValueError, IndexError):
        return None


def test_a_request_past_the_timeout_is_answered_504_and_its_worker_retires(server):
    # The app awaits (its loop stays free): at --timeout the connection answers 504 itself,
    # logs the request, and the worker retires, since a running task cannot be stopped safely.
    srv = asgi(server, "asgi_app:app", "-w", "1", "-t", "1")
    old = _serving_pid(srv)
    assert old is not None
    r = requests.get(srv.url + "/sleep?s=30", timeout=20)
    assert r.status_code == 504
    srv.wait_log(r"Request timed out after 1\.\ds: GET /sleep\?s=30 \(answered 504\)", timeout=5)
    new = wait_until(lambda: (pid := _serving_pid(srv)) not in (None, old) and pid, 20, "a replacement worker")
    assert requests.get(srv.url + "/", timeout=5).text == "Hello, World!"
    assert new != old


def test_an_app_that_blocks_its_loop_past_the_timeout_gets_its_worker_replaced(server):
    # The worker's sockets and heartbeat run on the loop's thread: a loop blocked past
    # --timeout (time.sleep in an async app) is a stuck worker, replaced as a sync one is.
    srv = asgi(server, "asgi_app:app", "-w", "1", "-t", "2")
    old = _serving_pid(srv)
    assert old is not None
    with Conn(srv.port, timeout=30) as c:
        c.send(request_bytes("GET", "/block?s=60"))
        srv.wait_log(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=20)
    new = wait_until(lambda: (pid := _serving_pid(srv)) not in (None, old) and pid, 20, "a replacement worker")
    assert new != old
    assert srv.returncode is None


def test_client_leaving_mid_body_is_an_http_disconnect(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}")
    c = Conn(srv.port, timeout=10)
    c.send(request_bytes("POST", "/pieces", headers=[("Content-Length", "100000")]) + b"x" * 1000)
    assert wait_for_file(state_dir / "pieces", timeout=10, predicate=lambda t: "piece" in t) is not None
    c.close()
    text = wait_for_file(state_dir / "pieces", timeout=10, predicate=lambda t: "disconnect" in t)
    assert text is not None and "disconnect" in text, text
    assert requests.get(srv.url + "/", timeout=5).text == "Hello, World!"


def test_large_upload_to_a_slow_app_is_not_buffered_whole(server):
    # 64 MiB to an app that takes its time: the worker queues at most a bounded amount (the
    # socket buffers plus a few hundred KiB), so its peak memory grows far less than the body.
    srv = asgi(server, "asgi_app:app", "-w", "1")
    worker = wait_until(lambda: children(srv.proc.pid), msg="a worker")[0]
    assert requests.get(srv.url + "/", timeout=5).status_code == 200

    def peak_kib():
        for line in open(f"/proc/{worker}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    before = peak_kib()
    size = 64 * 1024 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB
    with Conn(srv.port, timeout=120) as c:
        c.send(request_bytes("POST", "/slow-sink?ms=0.2", headers=[("Content-Length", str(size))]))
        for _ in range(size // len(block)):
            c.send(block)
        resp = c.read_response(timeout=120)
    assert resp.status == 200 and resp.body == str(size).encode()
    grown = peak_kib() - before
    assert grown < 24 * 1024, f"worker peak memory grew by {grown} KiB for a 64 MiB upload"


def test_request_body_sent_slowly_in_pieces(server):
    srv = asgi(server)
    body = b"x" * 5000 + b"END"
    with Conn(srv.port, timeout=10) as c:
        raw = request_bytes("POST", "/echo", body=body)
        for i in range(0, len(raw), 1500):
            c.send(raw[i : i + 1500])
            time.sleep(0.02)
        resp = c.read_response()
    assert resp.status == 200 and resp.body == body


# -- disconnect ---------------------------------------------------------------------------------


def test_http_disconnect_is_delivered_when_the_client_goes_away(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}")
    c = Conn(srv.port, timeout=10)
    c.send(request_bytes("GET", "/hold"))
    c.read_until(b"holding\n", timeout=5)
    c.close()
    text = wait_for_file(state_dir / "disconnect", timeout=10, predicate=lambda t: "got " in t)
    assert text is not None and "got http.disconnect" in text, text
    assert "first http.request" in text
    # the worker is fine afterwards
    assert requests.get(srv.url + "/", timeout=5).text == "Hello, World!"
    assert "Exception in ASGI application" not in srv.stderr_text()


def test_http_disconnect_is_delivered_after_the_response_completes(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}")
    with Conn(srv.port, timeout=10) as c:  # keep-alive connection stays open meanwhile
        c.send(request_bytes("GET", "/after-body"))
        resp = c.read_response()
        assert resp.body == b"done"
        text = wait_for_file(state_dir / "disconnect", timeout=8, predicate=lambda t: "after-body" in t)
        assert text is not None and "after-body http.disconnect" in text, text


def test_an_app_still_running_after_its_client_left_is_cancelled_after_the_grace_period(server, state_dir):
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}",
               "--asgi-disconnect-grace-period", "1")
    c = Conn(srv.port, timeout=10)
    c.send(request_bytes("GET", "/linger"))
    c.read_until(b"lingering\n", timeout=5)
    left = time.time()
    c.close()
    text = wait_for_file(state_dir / "linger", timeout=10, predicate=lambda t: "cancelled" in t)
    assert text is not None and "cancelled" in text, text
    # not before the grace period (a lower bound only: the cancel is what is checked)
    assert float(text.split()[-1]) - left >= 0.9
    srv.wait_log(r"Cancelling an ASGI request 1s after its connection ended")
    assert requests.get(srv.url + "/", timeout=5).text == "Hello, World!"


def test_work_after_a_complete_response_is_not_cancelled(server, state_dir):
    # The response was complete when the client left: the app's remaining work is its own.
    srv = asgi(server, "asgi_app:app", "-w", "1", "-e", f"STATE_DIR={state_dir}",
               "--asgi-disconnect-grace-period", "0")
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("GET", "/after-response-work"))
        assert c.read_response().body == b"done early"
    text = wait_for_file(state_dir / "linger", timeout=10, predicate=lambda t: "finished" in t or "cancelled" in t)
    assert text is not None and "finished" in text and "cancelled" not in text, text


# -- concurrency --------------------------------------------------------------------------------


def test_fifty_sleeping_requests_overlap_in_one_worker(server):
    srv = asgi(server, "asgi_app:app", "-w", "1")
    t0 = time.monotonic()
    responses = _hammer(srv.url + "/sleep?s=0.5", 50)
    elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 and r.text == "slept" for r in responses)
    max_seen, now, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert int(max_seen) >= 45, (max_seen, elapsed)
    assert int(now) == 0


def test_worker_connections_caps_concurrent_requests(server):
    srv = asgi(server, "asgi_app:app", "-w", "1", "--worker-connections", "5")
    responses = _hammer(srv.url + "/sleep?s=0.3", 15)
    assert all(r.status_code == 200 for r in responses)
    max_seen, _now, _pid = requests.get(srv.url + "/max", timeout=10).text.split()
    assert int(max_seen) == 5


# -- errors -------------------------------------------------------------------------------------


def test_exception_before_response_is_500_and_the_worker_keeps_serving(server):
    srv = asgi(server, "asgi_app:app", "-w", "1")
    r = requests.get(srv.url + "/boom", timeout=10)
    assert r.status_code == 500
    assert "boom in an ASGI task" not in r.text
    assert requests.get(srv.url + "/", timeout=10).text == "Hello, World!"
    srv.wait_log(r"RuntimeError: boom in an ASGI task")
    assert "Traceback" in srv.stderr_text()


def test_exception_after_start_but_before_any_body_is_a_500(server):
    # http.response.start alone puts nothing on the wire, so the client still gets a clean 500.
    srv = asgi(server, "asgi_app:app", "-w", "1")
    r = requests.get(srv.url + "/boom-started", timeout=10)
    assert r.status_code == 500
    assert requests.get(srv.url + "/", timeout=10).text == "Hello, World!"
    srv.wait_log(r"RuntimeError: boom after start in an ASGI task")


def test_start_without_a_body_message_ends_an_empty_response(server):
    srv = asgi(server, "asgi_app:app", "-w", "1")
    with requests.Session() as session:
        r = session.get(srv.url + "/start-only", timeout=10)
        assert (r.status_code, r.headers.get("x-started"), r.content) == (201, "yes", b"")
        # the connection is still usable
        assert session.get(srv.url + "/", timeout=10).text == "Hello, World!"


def test_large_streamed_response_to_a_slow_reader_arrives_whole_and_in_order(server):
    # 8 MiB in 64 KiB messages: far more than the connection buffers, so the app is made to
    # wait (backpressure) while the client reads slowly; every byte must arrive, in order.
    n, size = 128, 65536
    srv = asgi(server, "asgi_app:app", "-w", "1")
    with Conn(srv.port, timeout=30) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(request_bytes("GET", f"/big?n={n}&size={size}"))
        c.read_until(b"\r\n\r\n", timeout=10)
        head, _, body = c.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        received = bytearray(body)
        deadline = time.monotonic() + 60
        while len(received) < n * size and time.monotonic() < deadline:
            chunk = c.sock.recv(32768)
            if not chunk:
                break
            received += chunk
            if len(received) < 1 << 20:
                time.sleep(0.002)  # slow at first, so the app's buffer fills
    assert len(received) == n * size
    pattern = bytes(i % 251 for i in range(251))
    expected = (pattern * (n * size // 251 + 1))[: n * size]
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert requests.get(srv.url + "/", timeout=10).text == "Hello, World!"


def test_exception_after_response_start_aborts_that_response_only(server):
    srv = asgi(server, "asgi_app:app", "-w", "1")
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("GET", "/boom-late"))
        c.read_until(b"partial", timeout=5)
        # the response cannot be completed: the connection must be closed, not left hanging
        assert c.is_closed(5)
        assert b"0\r\n\r\n" not in c.buf  # no terminating chunk: the client can tell it was cut
    assert requests.get(srv.url + "/", timeout=10).text == "Hello, World!"
    srv.wait_log(r"RuntimeError: late boom in an ASGI task")


# -- worker-class names and mismatches ----------------------------------------------------------


@pytest.mark.parametrize("name", ["asgi", "uvicorn.workers.UvicornWorker", "uvicorn_worker.UvicornWorker"])
def test_uvicorn_worker_names_are_accepted(server, name):
    srv = server("asgi_app:app", "-k", name, cwd=CLASSES)
    assert json.loads(requests.get(srv.url + "/scope", timeout=10).text)["type"] == "http"


@pytest.mark.parametrize("kind", ["sync", "gthread"])
def test_asgi_app_under_a_wsgi_worker_exits_4(server, kind):
    srv = server("asgi_app:app", "-k", kind, cwd=CLASSES, expect_fail=True)
    assert srv.returncode == 4, srv.stderr_text()[-2000:]
    err = srv.stderr_text()
    assert "ASGI" in err and "-k asgi" in err


def test_wsgi_app_under_the_asgi_worker_exits_4(server):
    srv = server("wsgi_app:app", "-k", "asgi", cwd=CLASSES, expect_fail=True)
    assert srv.returncode == 4, srv.stderr_text()[-2000:]
    err = srv.stderr_text()
    assert "WSGI" in err and "sync" in err and "gthread" in err
