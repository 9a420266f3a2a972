"""`ferrocorn balance` against nginx's `upstream`: the same upstreams, the same requests, the same
upstream chosen for each request.

The upstreams are ferrocorn instances of ``tests/apps/upstream_app.py``, each naming itself in
an ``X-Upstream`` response header (nginx passes it through). nginx 1.22 (the Debian package,
``/usr/sbin/nginx`` or ``$NGINX``) runs as a non-daemon master with ``worker_processes 1`` and a
temporary prefix on a loopback port, stopped by PID, with

    upstream backend { METHOD; server 127.0.0.1:P [params]; ...; keepalive 16; }
    proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_next_upstream error timeout;

and ``ferrocorn balance -w 1 --upstream '127.0.0.1:P [params]' ... --method METHOD`` (its
upstream keep-alive pool is on by default, as nginx's ``keepalive 16`` is here). Every request
is a fresh client connection (``Connection: close``) made serially, so nothing depends on
concurrency, and both balancers start with fresh state for each case.

Compared:

- ``test_same_upstream_sequence``: round robin with weights (5/1/1, 3/2, 1/1/1 with one
  ``down``), least_conn (serial requests: every upstream ties, so it is weighted round robin),
  ``hash $request_uri`` and ``hash $request_uri consistent`` over 30 URIs (with weights and a
  ``down`` server), ``ip_hash`` from 20+ loopback source addresses (127.0.X.Y: the client socket
  is bound to it before connecting), where two addresses in one /24 must also land together.
- ``test_same_failover_sequence``: an upstream is SIGKILLed (its process group) mid-sequence with
  ``max_fails``/``fail_timeout``; then requests while it is out, after ``fail_timeout`` (a probe
  that fails again and is retried on the next upstream), and after it has been restarted on the
  same port (a probe that succeeds, then its share coming back); for round robin (weights 1/1/1,
  2/1/1 with max_fails=2, 5/1/1 losing the heaviest) and for ip_hash, hash and consistent hash
  (a key whose upstream is out goes elsewhere, and comes back). nginx and ferrocorn each get
  their own set of upstreams and run the same scenario at the same time; for the consistent
  hash, whose ring is built from the servers' ``host:port`` names, the scenario runs twice, one
  after the other, on the same ports.

nginx reads its clock in whole seconds: a peer failed at second ``s`` is usable again once the
clock reads ``s + fail_timeout + 1``. The failover scenario therefore sends the "out" requests
right after the failure (well inside ``fail_timeout``) and waits ``fail_timeout + 1.3`` s before
the "after fail_timeout" requests, so both balancers are certain to be on the same side of it.

nginx's ``$upstream_addr`` (every attempt, as ``addr, addr``) is added to its answers as
``X-Upstream-Addr`` and shown in the failure report.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from conftest import ServerFactory, ferrocorn_cmd
from nginx_proc import NginxProcess
from procs import restartable_port

NGINX = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
HAVE_NGINX = os.access(NGINX, os.X_OK)
pytestmark = pytest.mark.skipif(
    not HAVE_NGINX,
    reason=f"nginx not found ({NGINX}; Debian: apt-get install nginx-light, or set NGINX=path)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a raw client: one connection per request, optionally from a given source address ----------


def fetch(port: int, path: str = "/whoami", src: str | None = None, timeout: float = 15.0):
    """GET ``path``; returns (status, X-Upstream or '-', X-Upstream-Addr or '')."""
    with socket.socket() as c:
        c.settimeout(timeout)
        if src:
            c.bind((src, 0))
        c.connect(("127.0.0.1", port))
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: balance.test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            try:
                chunk = c.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, "-", ""
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers.get("x-upstream", "-"), headers.get("x-upstream-addr", "")


# -- upstreams ------------------------------------------------------------------------------------


def start_upstream(factory: ServerFactory, name: str, port: int | None = None):
    port = port or free_port()
    return factory(
        "upstream_app:app", "-b", f"127.0.0.1:{port}", "-w", 1, "-k", "gthread", "--threads", 4,
        env={"UPSTREAM_NAME": name},
    )


def kill_instance(srv):
    """SIGKILL an instance's whole process group (master and workers), like a host dying."""
    try:
        os.killpg(srv.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    srv.proc.wait(5)


# -- nginx ----------------------------------------------------------------------------------------

NGINX_CONF = """\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format up '$remote_addr $request_uri $status $upstream_addr';
    access_log {prefix}/access.log up;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream backend {{
{upstream}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
            proxy_connect_timeout 5s;
            add_header X-Upstream-Addr $upstream_addr always;
        }}
    }}
}}
"""


def nginx_method_line(method: str) -> str:
    return "" if method == "round_robin" else f"{method};"


class Nginx(NginxProcess):
    """nginx balancing over ``servers`` with ``method``."""

    def __init__(self, method: str, servers: list[str]):
        lines = [nginx_method_line(method)] + [f"server {s};" for s in servers] + ["keepalive 16;"]
        upstream = "\n".join(f"        {ln}" for ln in lines if ln)
        super().__init__(NGINX, NGINX_CONF, name="ferrocorn-nginx-lb", upstream=upstream)


class Ferrocorn:
    """``ferrocorn balance -w 1`` over the same servers."""

    def __init__(self, factory: ServerFactory, method: str, servers: list[str]):
        args = ["-w", "1", "--method", method]
        for s in servers:
            args += ["--upstream", s]
        self.srv = factory(None, *args, cmd=ferrocorn_cmd() + ["balance"])
        self.port = self.srv.port

    def logs(self) -> str:
        return "--- ferrocorn balance stderr\n" + self.srv.stderr_text()[-3000:]

    def stop(self):
        self.srv.stop()


# -- the cases ------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    method: str
    servers: list  # (upstream name, params)
    requests: list  # (path, source address or None)
    same_24: list = field(default_factory=list)  # [(i, j)]: requests i and j must match each other


def serial(n: int) -> list:
    return [("/whoami", None)] * n


URIS = [f"/item/{i}?q={i * 7 % 13}" for i in range(30)]


def uri_requests() -> list:
    return [(u, None) for u in URIS]


# Source addresses on loopback: 127.A.B.C with varied first three octets (ip_hash keys on the
# /24), and pairs inside one /24 that must land on the same upstream.
SOURCES = [f"127.{a}.{b}.{c}" for a, b, c in [
    (0, 0, 1), (0, 1, 1), (0, 2, 9), (0, 3, 7), (0, 4, 2), (0, 5, 200), (0, 6, 3), (0, 7, 44),
    (0, 8, 5), (0, 9, 17), (1, 0, 1), (1, 1, 2), (1, 2, 3), (2, 0, 4), (3, 3, 3), (9, 9, 9),
    (10, 20, 30), (42, 0, 1), (100, 1, 1), (200, 200, 200), (255, 254, 253), (7, 77, 177),
]]
SAME_24 = [("127.0.1.1", "127.0.1.250"), ("127.0.5.200", "127.0.5.1"), ("127.42.0.1", "127.42.0.99"),
           ("127.10.20.30", "127.10.20.31")]


def ip_requests():
    reqs = [("/whoami", s) for s in SOURCES]
    pairs = []
    for x, y in SAME_24:
        reqs.append(("/whoami", x))
        i = len(reqs) - 1
        reqs.append(("/whoami", y))
        pairs.append((i, i + 1))
    # the whole list again: the mapping is stable, not a rotation
    reqs += [("/whoami", s) for s in SOURCES]
    return reqs, pairs


IP_REQS, IP_PAIRS = ip_requests()

CASES = [
    Case("rr_5_1_1", "round_robin", [("a", "weight=5"), ("b", ""), ("c", "")], serial(30)),
    Case("rr_3_2", "round_robin", [("a", "weight=3"), ("b", "weight=2")], serial(30)),
    Case("rr_1_1_1_one_down", "round_robin", [("a", ""), ("b", "down"), ("c", "")], serial(30)),
    Case("rr_2_3_1_4", "round_robin", [("a", "weight=2"), ("b", "weight=3"), ("c", "weight=1"), ("d", "weight=4")],
         serial(30)),
    Case("least_conn_serial_3_1_2", "least_conn", [("a", "weight=3"), ("b", ""), ("c", "weight=2")], serial(30)),
    Case("ip_hash_1_1_1", "ip_hash", [("a", ""), ("b", ""), ("c", "")], IP_REQS, IP_PAIRS),
    Case("ip_hash_weights_3_1_2", "ip_hash", [("a", "weight=3"), ("b", ""), ("c", "weight=2")], IP_REQS, IP_PAIRS),
    Case("ip_hash_one_down", "ip_hash", [("a", ""), ("b", "down"), ("c", ""), ("d", "")], IP_REQS, IP_PAIRS),
    Case("hash_uri_1_1_1", "hash $request_uri", [("a", ""), ("b", ""), ("c", "")], uri_requests()),
    Case("hash_uri_weights_2_1_3", "hash $request_uri", [("a", "weight=2"), ("b", ""), ("c", "weight=3")],
         uri_requests()),
    Case("hash_uri_one_down", "hash $request_uri", [("a", ""), ("b", "down"), ("c", ""), ("d", "")],
         uri_requests()),
    Case("hash_uri_consistent_1_1_1", "hash $request_uri consistent", [("a", ""), ("b", ""), ("c", "")],
         uri_requests()),
    Case("hash_uri_consistent_weights_2_1_1", "hash $request_uri consistent",
         [("a", "weight=2"), ("b", ""), ("c", "")], uri_requests()),
    Case("hash_uri_consistent_one_down", "hash $request_uri consistent",
         [("a", ""), ("b", "down"), ("c", ""), ("d", "")], uri_requests()),
]


@pytest.fixture(scope="module")
def upstreams():
    """Four named upstreams (a, b, c, d) shared by the sequence cases: {name: Server}."""
    factory = ServerFactory()
    try:
        yield {n: start_upstream(factory, n) for n in "abcd"}
    finally:
        factory.stop_all()


def server_lines(ups: dict, servers: list) -> list[str]:
    return [f"127.0.0.1:{ups[name].port} {params}".strip() for name, params in servers]


def run_requests(port: int, reqs: list) -> list[tuple]:
    return [fetch(port, path, src) for path, src in reqs]


def report(case_id: str, reqs, ngx, fc, extra="") -> str:
    rows = []
    for i, ((path, src), (ns, nn, na), (fs, fn, _)) in enumerate(zip(reqs, ngx, fc)):
        mark = "" if (ns, nn) == (fs, fn) else "  <-- differs"
        rows.append(f"{i:3d} {src or '':16s} {path:18s} nginx {ns} {nn:2s} [{na}]   ferrocorn {fs} {fn}{mark}")
    return (f"{case_id}: ferrocorn chose differently from nginx\n"
            f"nginx:     {' '.join(n for _, n, _ in ngx)}\n"
            f"ferrocorn: {' '.join(n for _, n, _ in fc)}\n" + "\n".join(rows) + extra)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_upstream_sequence(case: Case, upstreams):
    servers = server_lines(upstreams, case.servers)
    factory = ServerFactory()
    nginx = None
    try:
        nginx = Nginx(case.method, servers)
        ngx = run_requests(nginx.port, case.requests)
        nginx_logs = nginx.logs()
        nginx.stop()
        nginx = None
        fc_lb = Ferrocorn(factory, case.method, servers)
        fc = run_requests(fc_lb.port, case.requests)
        fc_logs = fc_lb.logs()
    finally:
        if nginx is not None:
            nginx.stop()
        factory.stop_all()
    # nginx itself: every request answered, by an upstream that is not down
    down = {name for name, params in case.servers if "down" in params}
    assert all(s == 200 and n not in down and n != "-" for s, n, _ in ngx), report(case.id, case.requests, ngx, fc,
                                                                                    "\n" + nginx_logs)
    for i, j in case.same_24:
        assert ngx[i][1] == ngx[j][1], f"nginx: {case.requests[i]} and {case.requests[j]} differ"
        assert fc[i][1] == fc[j][1], f"ferrocorn: {case.requests[i]} and {case.requests[j]} differ (same /24)"
    assert [(s, n) for s, n, _ in fc] == [(s, n) for s, n, _ in ngx], report(
        case.id, case.requests, ngx, fc, "\n" + fc_logs
    )


# -- failover -------------------------------------------------------------------------------------

FAIL_TIMEOUT = 2  # seconds
PAST_FAIL_TIMEOUT = FAIL_TIMEOUT + 1.3  # past it for nginx's whole-second clock too


@dataclass
class Failover:
    id: str
    servers: list  # (name, params)
    victim: str
    method: str = "round_robin"
    requests: list = field(default_factory=lambda: serial(1))  # cycled through, phase after phase
    n_before: int = 7
    n_out: int = 10
    n_probe: int = 10
    n_back: int = 14


def params(n, weight=1):
    return f"{'weight=%d ' % weight if weight != 1 else ''}max_fails={n} fail_timeout={FAIL_TIMEOUT}s"


FAILOVERS = [
    Failover("equal_weights_max_fails_1", [(n, params(1)) for n in "abc"], "b"),
    Failover("weights_2_1_1_max_fails_2", [("a", params(2, 2)), ("b", params(2)), ("c", params(2))], "a"),
    Failover("weights_5_1_1_kill_heaviest", [("a", params(1, 5)), ("b", params(1)), ("c", params(1))], "a"),
    # the hashes: a key whose upstream is out is rehashed to another one, and comes back
    Failover("ip_hash_max_fails_1", [(n, params(1)) for n in "abc"], "a", "ip_hash",
             [("/whoami", s) for s in SOURCES[:12]], n_before=12, n_out=12, n_probe=12, n_back=12),
    Failover("hash_uri_max_fails_1", [(n, params(1)) for n in "abc"], "b", "hash $request_uri",
             [(u, None) for u in URIS[:12]], n_before=12, n_out=12, n_probe=12, n_back=12),
    Failover("hash_uri_consistent_max_fails_1", [(n, params(1)) for n in "abc"], "a",
             "hash $request_uri consistent", [(u, None) for u in URIS[:12]],
             n_before=12, n_out=12, n_probe=12, n_back=12),
]

PHASES = ("before", "out", "probe (still dead)", "back (restarted)")


def run_failover(fo: Failover, balancer_factory, result: dict, key: str, ports: dict):
    """One scenario on upstreams at ``ports`` ({name: port}): {phase: [(status, name, addr)]}
    into result[key]."""
    factory = ServerFactory()
    lb = None
    try:
        ups = {name: start_upstream(factory, name, ports[name]) for name, _ in fo.servers}
        servers = server_lines(ups, fo.servers)
        lb = balancer_factory(factory, fo.method, servers)
        reqs = itertools.cycle(fo.requests)

        def send(n):
            return [fetch(lb.port, *next(reqs)) for _ in range(n)]

        seqs = {}
        seqs["before"] = send(fo.n_before)
        victim_port = ups[fo.victim].port
        kill_instance(ups[fo.victim])
        seqs["out"] = send(fo.n_out)
        time.sleep(PAST_FAIL_TIMEOUT)
        seqs["probe (still dead)"] = send(fo.n_probe)
        t0 = time.monotonic()
        start_upstream(factory, fo.victim, victim_port)
        time.sleep(max(0.0, PAST_FAIL_TIMEOUT - (time.monotonic() - t0)))
        seqs["back (restarted)"] = send(fo.n_back)
        result[key] = seqs
        result[key + "_logs"] = lb.logs()
    except BaseException as e:  # reported by the test
        result[key + "_error"] = e
        if lb is not None:
            result[key + "_logs"] = lb.logs()
    finally:
        if lb is not None:
            lb.stop()
        factory.stop_all()


@pytest.mark.parametrize("fo", FAILOVERS, ids=[f.id for f in FAILOVERS])
def test_same_failover_sequence(fo: Failover):
    result: dict = {}
    # restarted on the same port: below the ephemeral range, so no connection takes it meanwhile
    nginx_ports = {name: restartable_port() for name, _ in fo.servers}
    args = {
        "nginx": (fo, lambda f, m, s: Nginx(m, s), result, "nginx", nginx_ports),
        "ferrocorn": (fo, lambda f, m, s: Ferrocorn(f, m, s), result, "ferrocorn", None),
    }
    if "consistent" in fo.method:
        # the ketama ring is built from the servers' "host:port" names: both balancers need the
        # same ports, so the scenario runs twice, one after the other, on the same ports
        run_failover(*args["nginx"])
        run_failover(*args["ferrocorn"][:-1], nginx_ports)
    else:
        # the same scenario at the same time on two sets of upstreams
        args["ferrocorn"] = args["ferrocorn"][:-1] + ({name: restartable_port() for name in nginx_ports},)
        threads = [threading.Thread(target=run_failover, args=a) for a in args.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a failover scenario did not finish within 60 s"
    for key in ("nginx", "ferrocorn"):
        if key + "_error" in result:
            raise AssertionError(f"{key} scenario failed: {result[key + '_error']!r}\n{result.get(key + '_logs', '')}")
    ngx, fc = result["nginx"], result["ferrocorn"]
    lines, same = [], True
    for phase in PHASES:
        n_seq = [f"{n}" if s == 200 else f"{n}/{s}" for s, n, _ in ngx[phase]]
        f_seq = [f"{n}" if s == 200 else f"{n}/{s}" for s, n, _ in fc[phase]]
        attempts = " | ".join(a for _, _, a in ngx[phase])
        flag = "" if n_seq == f_seq else "   <-- differs"
        same &= n_seq == f_seq
        lines.append(f"{phase:20s} nginx     {' '.join(n_seq)}{flag}\n{'':20s} ferrocorn {' '.join(f_seq)}\n"
                     f"{'':20s} (nginx attempts: {attempts})")
    text = f"failover {fo.id} ({fo.method}, victim {fo.victim}, servers {fo.servers}):\n" + "\n".join(lines)
    # every request answered by both (GETs are retried on the next upstream)
    for key, seqs in (("nginx", ngx), ("ferrocorn", fc)):
        bad = [(phase, s) for phase in PHASES for s, _, _ in seqs[phase] if s != 200]
        assert not bad, f"{key} did not answer every request: {bad}\n{text}\n{result.get(key + '_logs', '')}"
    assert same, text + "\n" + result.get("ferrocorn_logs", "")
    # sanity: nginx really took the victim out and back in
    assert fo.victim not in [n for _, n, _ in ngx["out"]], text
    assert fo.victim in [n for _, n, _ in ngx["back (restarted)"]], text
