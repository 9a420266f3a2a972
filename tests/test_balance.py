"""`ferrocorn balance`: a real balancer process in front of real upstream processes (ferrocorn
instances serving tests/apps/upstream_app.py), talked to with real clients.

What each test shows is in its name; the selection sequences themselves (nginx's smooth
weighted round robin, max_fails/fail_timeout, ip_hash, ketama) are unit-tested in
crates/balance, and compared with nginx itself in test_balance_nginx_diff.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter

import pytest
import requests

from conftest import APPS_DIR, ferrocorn_cmd
from procs import restartable_port, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_upstream(server, name, port=None, *args, env=None, workers=1, klass="gthread", log=False):
    """A ferrocorn instance serving the upstream app as ``name`` on ``port`` (free if None)."""
    port = port or free_port()
    full_env = {"UPSTREAM_NAME": name, **(env or {})}
    return server(
        "upstream_app:app", "-b", f"127.0.0.1:{port}", "-w", workers, "-k", klass,
        "--threads", 4, *args, env=full_env,
    )


def start_balancer(server, *args, workers=1):
    return server(None, "-w", workers, *args, cmd=ferrocorn_cmd() + ["balance"])


def upstream_arg(up, params=""):
    return f"127.0.0.1:{up.port} {params}".strip()


def who(resp) -> str:
    return resp.headers.get("X-Upstream", "?")


def kill_instance(srv):
    """SIGKILL an instance's whole process group (master and workers), like a host dying."""
    try:
        os.killpg(srv.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    srv.proc.wait(5)


def test_round_robin_alternates_and_forwards_the_client(server):
    a = start_upstream(server, "a")
    b = start_upstream(server, "b")
    # The client (127.0.0.1) is not a trusted proxy here.
    lb = start_balancer(server, "--upstream", upstream_arg(a), "--upstream", upstream_arg(b),
                        "--forwarded-allow-ips", "10.9.9.9")
    with requests.Session() as s:
        names = [who(s.get(f"{lb.url}/whoami")) for _ in range(6)]
        assert names in (["a", "b"] * 3, ["b", "a"] * 3), names
        body = s.get(f"{lb.url}/whoami", headers={"X-Forwarded-For": "6.6.6.6"}).json()
    headers = body["headers"]
    # An untrusted client's X-Forwarded-For is replaced, not appended to.
    assert headers["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert headers["HTTP_X_REAL_IP"] == "127.0.0.1"
    assert headers["HTTP_X_FORWARDED_PROTO"] == "http"
    assert headers["HTTP_X_FORWARDED_HOST"] == f"127.0.0.1:{lb.port}"
    assert headers["HTTP_HOST"] == f"127.0.0.1:{lb.port}"
    assert headers["HTTP_FORWARDED"].startswith("for=127.0.0.1;proto=http")
    assert "HTTP_CONNECTION" not in headers  # kept alive: HTTP/1.1's default, no header


def test_a_trusted_proxys_forwarding_headers_are_appended_to(server):
    a = start_upstream(server, "a")
    lb = start_balancer(server, "--upstream", upstream_arg(a))  # 127.0.0.1 is trusted by default
    headers = requests.get(
        f"{lb.url}/whoami",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "Forwarded": "for=6.6.6.6"},
    ).json()["headers"]
    assert headers["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert headers["HTTP_X_FORWARDED_PROTO"] == "https"
    assert headers["HTTP_FORWARDED"].startswith("for=6.6.6.6, for=127.0.0.1")


def test_weights_follow_nginx_smooth_round_robin(server):
    ups = {n: start_upstream(server, n) for n in "abc"}
    lb = start_balancer(
        server,
        "--upstream", upstream_arg(ups["a"], "weight=5"),
        "--upstream", upstream_arg(ups["b"]),
        "--upstream", upstream_arg(ups["c"]),
    )
    with requests.Session() as s:
        seq = "".join(who(s.get(f"{lb.url}/whoami")) for _ in range(14))
    assert seq == "aabacaa" * 2


def test_keepalive_pool_reuses_upstream_connections(server):
    a = start_upstream(server, "a", None, "--access-logfile", "-", "--access-logformat",
                       "%(h)s %({REMOTE_PORT}e)s")
    lb = start_balancer(server, "--upstream", upstream_arg(a), "--keepalive", 8)
    for _ in range(30):  # a new client connection each time; the upstream's stay open
        r = requests.get(f"{lb.url}/whoami")
        assert r.status_code == 200
        assert "HTTP_CONNECTION" not in r.json()["headers"]
    lines = [ln for ln in (a.stdout_text() + a.stderr_text()).splitlines() if ln.startswith("127.0.0.1 ")]
    ports = {ln.split()[1] for ln in lines}
    assert len(lines) >= 30 and len(ports) == 1, (len(lines), ports)


def sockets_to(port: int, state: str) -> int:
    """TCP sockets on this host in ``state`` (/proc/net/tcp's hex code) towards ``port``."""
    lines = open("/proc/net/tcp").read().splitlines()[1:]
    return sum(1 for ln in lines if ln.split()[3] == state and int(ln.split()[2].split(":")[1], 16) == port)


def test_idle_upstream_connections_the_upstream_closed_are_let_go_at_once(server):
    """nginx closes a kept upstream connection as soon as the upstream closes it; so does the
    balancer (within its 250 ms sweep), long before its own idle timeout of 60 s."""
    a = start_upstream(server, "a", None, "--keep-alive", 1)
    lb = start_balancer(server, "--upstream", upstream_arg(a), "--keepalive", 8)
    threads = [threading.Thread(target=requests.get, args=(f"{lb.url}/slow?ms=300",)) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(10) for t in threads]
    assert sockets_to(a.port, "01") >= 2, "the pool holds the upstream connections"
    time.sleep(1.0 + 1.0)  # the upstream's keep-alive, then more than the sweep's period
    assert (sockets_to(a.port, "01"), sockets_to(a.port, "08")) == (0, 0), "(established, close-wait)"
    assert requests.get(f"{lb.url}/whoami").status_code == 200


def test_large_bodies_stream_both_ways(server):
    a = start_upstream(server, "a")
    lb = start_balancer(server, "--upstream", upstream_arg(a))
    payload = os.urandom(3 << 20)
    r = requests.post(f"{lb.url}/echo", data=payload)
    assert r.status_code == 200 and r.content == payload
    # chunked upload (no Content-Length): re-chunked upstream
    r = requests.post(f"{lb.url}/echo", data=iter([payload[:100000], payload[100000:200000]]))
    assert r.status_code == 200 and r.content == payload[:200000]
    r = requests.get(f"{lb.url}/big?n={5 << 20}")
    assert len(r.content) == 5 << 20
    r = requests.get(f"{lb.url}/chunked?n=123456")
    assert r.content == b"y" * 123456
    assert r.headers.get("Transfer-Encoding") == "chunked"


def raw_exchange(port, data: bytes, timeout=5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        out = b""
        while True:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_http10_client_gets_a_close_delimited_body(server):
    a = start_upstream(server, "a")
    lb = start_balancer(server, "--upstream", upstream_arg(a))
    out = raw_exchange(lb.port, b"GET /chunked?n=5000 HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"chunked" not in head.lower()
    assert body == b"y" * 5000


def test_ambiguous_framing_is_refused_not_forwarded(server, state_dir):
    a = start_upstream(server, "a", env={"STATE_DIR": str(state_dir)})
    lb = start_balancer(server, "--upstream", upstream_arg(a))
    out = raw_exchange(
        lb.port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    time.sleep(0.2)
    log = (state_dir / "a.log").read_text() if (state_dir / "a.log").exists() else ""
    assert "/smuggled" not in log and "/echo" not in log


def test_bad_upstream_specs_stop_the_start_naming_them(server):
    for spec, says in [
        ("127.0.0.1:1 weight=x", "weight"),
        ("127.0.0.1:1 foo=1", "foo"),
        ("127.0.0.1", "port"),
        ("127.0.0.1:1 fail_timeout=abc", "fail_timeout"),
    ]:
        srv = server(None, "--upstream", spec, cmd=ferrocorn_cmd() + ["balance"], expect_fail=True)
        err = srv.stderr_text()
        assert srv.returncode != 0
        assert "upstreams" in err and says in err, err
    srv = server(None, "--method", "hash $nope", "--upstream", "127.0.0.1:1",
                 cmd=ferrocorn_cmd() + ["balance"], expect_fail=True)
    assert "balance_method" in srv.stderr_text()
    srv = server(None, cmd=ferrocorn_cmd() + ["balance"], expect_fail=True)
    assert "at least one upstream" in srv.stderr_text()
    srv = server("upstream_app:app", "--upstream", "127.0.0.1:1", expect_fail=True)
    assert "serves no app" in srv.stderr_text()


class GarbageUpstream:
    """A TCP server that answers every connection with ``reply`` and closes."""

    def __init__(self, reply: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.accepted = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                conn.recv(65536)
                conn.sendall(self.reply)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("reply", [b"garbage\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"])
def test_an_upstream_answering_garbage_or_closing_is_a_502_naming_it(server, reply):
    bad = GarbageUpstream(reply)
    try:
        lb = start_balancer(server, "--upstream", f"127.0.0.1:{bad.port}")
        r = requests.get(f"{lb.url}/x", timeout=5)
        if reply.startswith(b"HTTP/1.1 200"):
            # the head was good: the client gets it, and a cut body (connection closed)
            assert r.status_code == 200
        else:
            assert r.status_code == 502
            lb.wait_log(rf"upstream 127\.0\.0\.1:{bad.port} failed")
    except requests.exceptions.ChunkedEncodingError:
        assert reply.startswith(b"HTTP/1.1 200")
    finally:
        bad.close()


def test_no_live_upstream_is_a_502(server):
    lb = start_balancer(server, "--upstream", f"127.0.0.1:{free_port()}")
    r = requests.get(f"{lb.url}/x", timeout=5)
    assert r.status_code == 502


def test_a_refused_connection_goes_on_to_the_next_upstream(server):
    a = start_upstream(server, "a")
    dead = free_port()
    lb = start_balancer(server, "--upstream", f"127.0.0.1:{dead}", "--upstream", upstream_arg(a))
    with requests.Session() as s:
        statuses = [s.get(f"{lb.url}/whoami").status_code for _ in range(10)]
    assert statuses == [200] * 10


def test_post_is_not_sent_twice(server, state_dir):
    # The upstream reads the POST and dies before answering: nginx's rule is to not send a
    # non-idempotent request again once sent.
    bad = GarbageUpstream(b"")
    a = start_upstream(server, "a", env={"STATE_DIR": str(state_dir)})
    try:
        lb = start_balancer(
            server, "--upstream", f"127.0.0.1:{bad.port}", "--upstream", upstream_arg(a)
        )
        # find the order: the first request goes to the first upstream (the garbage one)
        r = requests.post(f"{lb.url}/echo", data=b"hello")
        assert r.status_code == 502
        assert bad.accepted == 1
        log = (state_dir / "a.log").read_text() if (state_dir / "a.log").exists() else ""
        assert "POST" not in log
        # an idempotent request in the same situation goes on to the next upstream
        r = requests.get(f"{lb.url}/whoami")
        r2 = requests.get(f"{lb.url}/whoami")
        assert {r.status_code, r2.status_code} == {200}
    finally:
        bad.close()


def test_backup_takes_over_when_every_primary_is_down(server):
    a = start_upstream(server, "a")
    b = start_upstream(server, "b")
    spare = start_upstream(server, "spare")
    lb = start_balancer(
        server,
        "--upstream", upstream_arg(a),
        "--upstream", upstream_arg(b),
        "--upstream", upstream_arg(spare, "backup"),
    )
    with requests.Session() as s:
        seen = Counter(who(s.get(f"{lb.url}/whoami")) for _ in range(10))
        assert set(seen) == {"a", "b"}
        kill_instance(a)
        kill_instance(b)
        seen = Counter()
        for _ in range(10):
            r = s.get(f"{lb.url}/whoami")
            assert r.status_code == 200
            seen[who(r)] += 1
        assert seen == {"spare": 10}


def test_least_conn_avoids_a_stuck_upstream(server):
    a = start_upstream(server, "a", None, "--threads", 8)
    b = start_upstream(server, "b", None, "--threads", 8)
    lb = start_balancer(
        server, "--method", "least_conn", "--upstream", upstream_arg(a), "--upstream", upstream_arg(b)
    )
    # Pin four slow requests: with least_conn they spread 2/2; then one upstream is "stuck"
    # with long requests while quick ones go to the other.
    stuck = []

    def slow():
        stuck.append(requests.get(f"{lb.url}/slow?ms=3000", timeout=10))

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    time.sleep(0.3)
    quick = Counter(who(requests.get(f"{lb.url}/whoami")) for _ in range(10))
    for t in threads:
        t.join()
    slow_on = Counter(who(r) for r in stuck)
    busiest = slow_on.most_common(1)[0][0]
    # The quick requests went to the upstream with fewer slow requests in flight.
    assert quick[busiest] == 0, (quick, slow_on)


def test_active_health_check_takes_a_sick_upstream_out_before_any_request(server, state_dir):
    sick_flag = state_dir / "sick"
    sick_flag.write_text("1")
    env = {"STATE_DIR": str(state_dir), "HEALTH_FILE": str(sick_flag)}
    a = start_upstream(server, "a", env=env)
    b = start_upstream(server, "b", env={"STATE_DIR": str(state_dir)})
    lb = start_balancer(
        server,
        "--upstream", upstream_arg(a),
        "--upstream", upstream_arg(b),
        "--health-check", "GET /healthz interval=200ms timeout=1s fall=2 rise=2",
    )
    with requests.Session() as s:
        seen = Counter(who(s.get(f"{lb.url}/whoami")) for _ in range(10))
    assert seen == {"b": 10}
    assert not (state_dir / "a.log").exists()
    sick_flag.unlink()
    lb.wait_log(r"upstream 127\.0\.0\.1:%d passed its health check" % a.port, timeout=5)
    with requests.Session() as s:
        seen = Counter(who(s.get(f"{lb.url}/whoami")) for _ in range(10))
    assert seen["a"] >= 3, seen


def test_websocket_through_the_balancer(server):
    ws_app_dir = APPS_DIR / "classes"
    up = server("ws_app:app", "-k", "asgi", cwd=ws_app_dir)
    lb = start_balancer(server, "--upstream", f"127.0.0.1:{up.port}")
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as c:
        c.sendall(
            f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"s3pplmbpxjydhoapftzzsomo=" in head.lower().replace(b" ", b"") or b"Sec-WebSocket-Accept" in head
        # a masked text frame "hi"
        mask = b"\x01\x02\x03\x04"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi"))
        c.sendall(b"\x81\x82" + mask + payload)
        frame = c.recv(4096)
        assert frame[:2] == b"\x81\x02" and frame[2:4] == b"hi", frame


def test_the_response_cache_works_in_front_of_the_upstreams(server, state_dir):
    a = start_upstream(server, "a", env={"STATE_DIR": str(state_dir)})
    lb = start_balancer(server, "--upstream", upstream_arg(a), "--cache", "--cache-use-stale", "error",
                        "--upstream-connect-timeout", "1")
    log = state_dir / "a.log"
    with requests.Session() as s:
        first = s.get(f"{lb.url}/cached?age=1")
        assert first.status_code == 200 and first.headers["X-Cache-Status"] == "MISS"
        assert first.text == "cached from a"
        second = s.get(f"{lb.url}/cached?age=1")
        assert second.headers["X-Cache-Status"] == "HIT" and second.text == "cached from a"
        assert log.read_text().count("/cached") == 1
        # not cacheable: passed through each time, tagged
        assert s.get(f"{lb.url}/whoami").headers["X-Cache-Status"] == "MISS"
        # the upstream dies; the expired copy stands in for the 502 (--cache-use-stale error)
        kill_instance(a)
        time.sleep(2.2)  # freshness is counted in whole seconds
        stale = s.get(f"{lb.url}/cached?age=1")
        assert stale.status_code == 200 and stale.headers["X-Cache-Status"] == "STALE"
        assert stale.text == "cached from a"
        assert s.get(f"{lb.url}/whoami").status_code == 502


def test_one_upstream_killed_under_load_loses_nothing_and_comes_back_slowly(server):
    port_a = restartable_port()  # a comes back on it
    a = start_upstream(server, "a", port_a, workers=2)
    b = start_upstream(server, "b", workers=2)
    lb = start_balancer(
        server,
        "--upstream", f"127.0.0.1:{port_a} max_fails=1 fail_timeout=1s slow_start=3s",
        "--upstream", upstream_arg(b, "max_fails=1 fail_timeout=1s slow_start=3s"),
    )
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(f"{lb.url}/slow?ms=5", timeout=10)
                    results.append((time.monotonic(), r.status_code, who(r)))
                except requests.RequestException as e:
                    results.append((time.monotonic(), 0, repr(e)))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        kill_instance(a)
        killed_at = time.monotonic()
        time.sleep(1.5)
        # every GET was answered (one in flight on "a" is sent again to "b")
        assert all(code == 200 for _, code, _ in results), [r for r in results if r[1] != 200][:5]
        after = [n for t, _, n in results if t > killed_at + 0.2]
        assert after and set(after) == {"b"}, Counter(after)
        lb.wait_log(r"upstream 127\.0\.0\.1:%d failed" % port_a)
        a2 = start_upstream(server, "a", port_a, workers=2)
        back_at = time.monotonic()
        wait_until(lambda: any(n == "a" and t > back_at for t, _, n in results), timeout=5,
                   msg="a probed and back")
        time.sleep(4)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(code == 200 for _, code, _ in results), [r for r in results if r[1] != 200][:5]
    first_a = min(t for t, _, n in results if n == "a" and t > back_at)
    early = Counter(n for t, _, n in results if first_a <= t < first_a + 1.0)
    late = Counter(n for t, _, n in results if first_a + 3.0 <= t)
    # slow start: "a" takes a small share at first, its full (equal) share after 3 s
    assert early["a"] < early["b"] / 2, early
    assert late["a"] > late["b"] * 0.6, late
    a2.stop()
