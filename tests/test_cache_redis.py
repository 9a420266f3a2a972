"""The Redis cache backend (issue 17, "Many hosts"): ``--cache-backend redis://…`` and
``redis+cluster://…`` keep the response cache's and the app cache's entries in Redis, so two
ferrocorn instances share them. Each test starts its own ``redis-server`` on a free loopback port
(no persistence, stopped by PID); the module is skipped when ``redis-server`` is missing.

Checked: a fill on one instance is a HIT on the other (Vary variants, PURGE of a key and of a
prefix, across instances); concurrent misses over both instances make one app call; the app
cache's set/get and incr across instances; Redis SIGKILLed under a request loop (every answer a
200, a warning logged, HITs again once Redis is back); Redis unreachable at start; a bad URL
refused at start; ``rediss://`` to a TLS-only Redis with a test CA; a three-node Redis Cluster
(entries spread over the nodes, HITs across instances, a prefix PURGE on every node).

The response-cache key is ``$scheme$request_uri``: two instances on different ports see
different Host headers, which are part of the default key.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from apps.cache_backend import calls
from apps.obs.obshelpers import ctl
from procs import restartable_port, wait_until
from wire import Conn, request_bytes
from concurrent_calls import fire
from concurrent_calls import json_op as op

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server and redis-cli are not installed (apt-get install redis-server)",
)

APP = "cache_backend:app"
APP_CACHE = "app_cache_app:app"
KEY = ["--cache-key", "$scheme$request_uri"]
# Tests of sharing (not of outages) allow Redis 2 s per reply, so a CPU-starved moment on a busy
# machine does not turn a HIT into a pass-through.
PATIENT = ["--cache-backend-timeout", "2"]


# -- Redis processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if bindable(port) and bindable(port + 10000):
            return port
    raise AssertionError("no free port pair for a cluster node")


def cli(port: int, *args: str, timeout: float = 5.0, password: str | None = None) -> str:
    auth = ["--no-auth-warning", "-a", password] if password else []
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *auth, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout.strip()


class Redis:
    """A ``redis-server`` on a loopback port, without persistence."""

    def __init__(self, port: int | None = None, *extra: str, password: str | None = None):
        self.port = port or free_port()
        self.extra = extra
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="ferrocorn-redis-")
        self.proc: subprocess.Popen | None = None
        self.log = open(f"{self.dir}/redis.log", "wb")  # noqa: SIM115 (kept open while it runs)

    def start(self) -> Redis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning", *self.extra,
             *(["--requirepass", self.password] if self.password else [])],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: cli(self.port, "PING", password=self.password) == "PONG", 10.0,
                       f"redis-server on {self.port}")
        except AssertionError as e:
            self.kill()
            raise AssertionError(f"{e}; its output:\n{open(self.log.name).read()[-2000:]}") from None
        return self

    def restart(self) -> Redis:
        """Start it again on its port and directory (a cluster node rejoins from its
        nodes.conf), after :meth:`kill`."""
        self.log = open(f"{self.dir}/redis.log", "ab")  # noqa: SIM115 (kept open while it runs)
        return self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL, by PID
            self.proc.wait(5)
        self.log.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def redis_server():
    started: list[Redis] = []

    def start(port: int | None = None) -> Redis:
        r = Redis(port).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill()
        shutil.rmtree(r.dir, ignore_errors=True)


@pytest.fixture
def counts(tmp_path):
    d = tmp_path / "counts"
    d.mkdir()
    return d


@pytest.fixture
def pair(server, counts):
    """``pair(url, *args)``: two response-cache instances on one Redis backend."""

    def start(url: str, *args: str):
        flags = ["-w", "2", "--cache", "--cache-backend", url, *KEY, *PATIENT, *args]
        env = {"CACHE_BACKEND_COUNTS": str(counts)}
        return server(APP, *flags, env=env), server(APP, *flags, env=env)

    return start


def get(srv, target: str, headers=None) -> requests.Response:
    h = {"Connection": "close", **(headers or {})}
    return requests.get(srv.url + target, headers=h, timeout=10)


def xcs(resp) -> str | None:
    return resp.headers.get("X-Cache-Status")


def purge(srv, target: str):
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("PURGE", target, headers=[("Connection", "close")]))
        resp = c.read_response()
    return resp.status, json.loads(resp.body)["purged"]






# -- one Redis server -----------------------------------------------------------------------------


def test_two_instances_share_entries_variants_and_purges(redis_server, pair, counts):
    redis = redis_server()
    a, b = pair(redis.url, "--cache-inactive", "30")
    target = "/shared?cc=max-age=60"
    assert xcs(get(a, target)) == "MISS"
    hit = get(b, target)
    assert (hit.status_code, xcs(hit)) == (200, "HIT")
    assert calls(counts, target) == 1
    names = cli(redis.port, "--scan", "--pattern", "fc:r:*").split()
    assert len(names) == 1 and names[0].endswith(":http/shared?cc=max-age=60"), names
    assert 0 < int(cli(redis.port, "TTL", names[0])) <= 30  # Redis drops it when inactive

    vary = "/vary?cc=max-age=60&vary=Accept-Language"
    fr, en = {"Accept-Language": "fr"}, {"Accept-Language": "en"}
    assert xcs(get(a, vary, fr)) == "MISS"
    assert xcs(get(b, vary, fr)) == "HIT"
    assert xcs(get(b, vary, en)) == "MISS"
    assert xcs(get(a, vary, en)) == "HIT"
    assert calls(counts, vary) == 2
    assert purge(b, vary) == (200, 2)  # the key with both its variants
    assert xcs(get(a, vary, fr)) == "MISS"

    for i in range(3):
        assert xcs(get(a, f"/prefix/{i}?cc=max-age=60")) == "MISS"
    assert purge(b, "/prefix/*") == (200, 3)
    assert xcs(get(a, "/prefix/1?cc=max-age=60")) == "MISS"
    assert xcs(get(b, target)) == "HIT"  # other keys stay
    assert int(cli(redis.port, "DBSIZE")) > 0


def test_concurrent_misses_over_two_instances_make_one_app_call(redis_server, pair, counts):
    a, b = pair(redis_server().url)
    target = "/locked?cc=max-age=60&sleep=0.5"
    answers = fire(20, lambda i: get((a, b)[i % 2], target))
    assert all(r.status_code == 200 for r in answers)
    logs = a.stderr_text()[-1500:] + b.stderr_text()[-1500:]
    assert calls(counts, target) == 1, ([xcs(r) for r in answers], logs)
    assert {xcs(r) for r in answers} <= {"MISS", "HIT"}, ([xcs(r) for r in answers], logs)


def test_app_cache_is_shared_and_incr_is_exact(redis_server, server):
    url = redis_server().url
    a = server(APP_CACHE, "-w", "2", "--cache-backend", url, *PATIENT)
    b = server(APP_CACHE, "-w", "2", "-k", "gthread", "--threads", "4", "--cache-backend", url, *PATIENT)
    assert op(a, "/backend")["result"] == "redis"
    assert op(a, "/set", k="greeting", v='{"text": "hello"}', t="60")["result"] is True
    assert op(b, "/get", k="greeting")["result"] == {"text": "hello"}
    assert op(b, "/add", k="greeting", v='"other"')["result"] is False
    assert op(b, "/get", k="missing")["result"] == "<missing>"
    results = fire(8, lambda i: [op((a, b)[i % 2], "/incr", k="hits")["result"] for _ in range(25)])
    assert sorted(v for batch in results for v in batch) == list(range(1, 201))
    assert op(a, "/get", k="hits")["result"] == 200
    assert op(a, "/incr", k="greeting")["status"] == 409  # a pickled value is not an integer
    assert op(b, "/delete", k="greeting")["result"] is True
    assert op(a, "/get", k="greeting")["result"] == "<missing>"
    assert op(a, "/clear")["result"] is True
    assert op(b, "/get", k="hits")["result"] == "<missing>"


@pytest.mark.parametrize("klass", ["asgi", "gevent"])
def test_a_stalled_redis_never_holds_up_the_other_requests_of_an_async_worker(redis_server, server, klass):
    """One worker, one request waiting on a Redis that stopped answering (SIGSTOP): the worker's
    other requests go on. ``await cache.aget`` waits in the loop's executor, and under gevent
    ``cache.get`` waits in gevent's thread pool; inline, either would hold up the whole loop
    until Redis came back or the backend timeout (5 s here) ran out."""
    redis = redis_server()
    app = "app_cache_app:asgi_app" if klass == "asgi" else APP_CACHE
    srv = server(app, "-w", "1", "-k", klass, "--cache-backend", redis.url, "--cache-backend-timeout", "5")
    assert op(srv, "/set", k="k", v='"v"', t="60")["result"] is True  # connected to Redis
    waited: list = []
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        waiting = threading.Thread(target=lambda: waited.append(op(srv, "/get", k="k")), daemon=True)
        waiting.start()
        time.sleep(0.3)  # the /get is waiting on Redis now
        started = time.monotonic()
        assert op(srv, "/backend")["result"] == "redis"
        other = time.monotonic() - started
        still_waiting = waiting.is_alive()
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    waiting.join(10)
    assert other < 2.0, f"a request that does not touch Redis waited {other:.1f} s behind one that does"
    assert still_waiting, "the /get did not wait on the stopped Redis"
    assert waited and waited[0]["result"] == "v", waited


def test_redis_killed_mid_run_passes_through_then_recovers(redis_server, server, counts):
    redis = redis_server(restartable_port())  # back on the same port below
    metrics_port = free_port()
    srv = server(APP, "-w", "2", "--cache", "--cache-backend", redis.url, *KEY,
                 "--metrics-bind", f"127.0.0.1:{metrics_port}",
                 env={"CACHE_BACKEND_COUNTS": str(counts)})
    target = "/steady?cc=max-age=60"
    assert xcs(get(srv, target)) == "MISS"
    assert xcs(get(srv, target)) == "HIT"
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            r = get(srv, target)
            seen.append((r.status_code, xcs(r)))
            time.sleep(0.01)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    time.sleep(0.3)
    redis.kill()
    before = calls(counts, target)
    wait_until(lambda: calls(counts, target) >= before + 5, 10, "requests passed to the app")
    srv.wait_log(r"Cache backend redis://127\.0\.0\.1:\d+/0 unreachable", timeout=5)
    redis_server(redis.port)  # back on the same port, empty
    wait_until(lambda: seen[-1][1] == "HIT", 10, "HITs again after Redis came back")
    stop.set()
    t.join(10)
    assert all(status == 200 for status, _ in seen), sorted(set(seen))
    assert {s for _, s in seen} <= {"HIT", "MISS", "BYPASS"}, sorted(set(seen))
    assert "HIT" in {s for _, s in seen[:5]}
    warnings = srv.stderr_text().count("unreachable")
    assert 1 <= warnings <= 4, srv.stderr_text()[-3000:]  # one per worker per interval

    def remote_errors() -> float:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        lines = [ln for ln in text.splitlines() if ln.startswith("ferrocorn_cache_remote_errors_total ")]
        return float(lines[0].split()[1]) if lines else 0.0

    # the workers publish their failed Redis operations with their heartbeat (every 0.5 s)
    wait_until(lambda: remote_errors() >= 1, 5, "Redis errors in the metrics")


def test_ctl_cache_purges_and_stats_act_on_redis(redis_server, counts, server, tmp_path):
    """``ferrocorn ctl cache`` with the entries in Redis: a purge through one instance's control
    socket removes what another instance stored (a key with its variants, a prefix, all), stats
    name the backend, and a Redis that does not answer makes the purge an error while the
    master goes on answering other commands."""
    redis = redis_server()
    sock = tmp_path / "a.ctl"
    flags = ["-w", "2", "--cache", "--cache-backend", redis.url, *KEY, *PATIENT]
    env = {"CACHE_BACKEND_COUNTS": str(counts)}
    a = server(APP, *flags, "--control-socket", str(sock), env=env)
    b = server(APP, *flags, env=env)

    def key(target):  # the test's --cache-key, $scheme$request_uri
        return f"http{target}"

    vary = "/cv?cc=max-age=60&vary=Accept-Language"
    for lang in ("en", "fr"):
        assert xcs(get(b, vary, {"Accept-Language": lang})) == "MISS"
    plain = [f"/cp/{n}?cc=max-age=60" for n in ("a", "b")] + ["/cq?cc=max-age=60"]
    for target in plain:
        assert xcs(get(b, target)) == "MISS"
        assert xcs(get(a, target)) == "HIT"

    stats = ctl(sock, "cache", "stats", json_out=True).data
    assert stats["ok"] is True and stats["store"]["backend"] == redis.url, stats
    assert stats["requests"]["hit"] == 3, stats  # a's own answers
    assert redis.url in ctl(sock, "cache", "stats").stdout

    p = ctl(sock, "cache", "purge", key(vary), json_out=True)
    assert p.data == {"ok": True, "purged": 2, "message": "purged 2 cached responses"}, p.data
    assert xcs(get(b, vary, {"Accept-Language": "en"})) == "MISS"
    assert calls(counts, vary) == 3
    p = ctl(sock, "cache", "purge", "--prefix", key("/cp/"))
    assert p.stdout.strip() == "purged 2 cached responses", p.stdout
    assert xcs(get(b, plain[0])) == "MISS" and xcs(get(b, plain[2])) == "HIT"
    p = ctl(sock, "cache", "purge", "--all", json_out=True)
    assert p.data["purged"] == 3, p.data  # /cv's en variant, /cp/a again, /cq
    assert cli(redis.port, "--scan", "--pattern", "fc:r:*").split() == []
    assert xcs(get(b, plain[2])) == "MISS"
    assert ctl(sock, "cache", "stats", json_out=True).data["purges"] == 3

    os.kill(redis.proc.pid, signal.SIGSTOP)  # Redis holds the connection and never answers
    try:
        answers = {}
        waiting = threading.Thread(target=lambda: answers.update(
            purge=ctl(sock, "cache", "purge", "--all", json_out=True, check=False)))
        waiting.start()
        time.sleep(0.5)  # the purge is waiting for Redis (PATIENT: 2 s)
        started = time.monotonic()
        status = ctl(sock, "status", json_out=True).data
        assert status["ok"] is True and time.monotonic() - started < 1.5
        waiting.join(15)
        failed = answers["purge"]
        assert failed.returncode != 0 and failed.data["ok"] is False, failed.stdout
        assert redis.url.rsplit("/", 1)[0] in failed.data["error"] and "nothing was purged" in failed.data["error"]
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    wait_until(lambda: ctl(sock, "cache", "purge", "--all", json_out=True, check=False).data["ok"], 10,
               "a purge once Redis answers again")


def test_a_password_protected_redis_with_the_right_and_a_wrong_password(server, counts):
    """``redis://:PASSWORD@host`` authenticates; a wrong password degrades to pass-through with
    a warning, like an unreachable Redis, and no log line shows either password."""
    redis = Redis(None, password="s3cret-pw").start()
    try:
        env = {"CACHE_BACKEND_COUNTS": str(counts)}
        flags = ["-w", "1", "--cache", *KEY, *PATIENT]
        good = server(APP, *flags, "--cache-backend", f"redis://:s3cret-pw@127.0.0.1:{redis.port}/0", env=env)
        target = "/auth?cc=max-age=60"
        assert xcs(get(good, target)) == "MISS"
        assert xcs(get(good, target)) == "HIT"
        names = cli(redis.port, "--scan", "--pattern", "fc:r:*", password="s3cret-pw").split()
        assert len(names) == 1 and names[0].endswith(":http/auth?cc=max-age=60"), names

        bad = server(APP, *flags, "--cache-backend", f"redis://:wrong-pw@127.0.0.1:{redis.port}/0", env=env)
        answers = [get(bad, target) for _ in range(3)]
        assert [(r.status_code, xcs(r) in ("MISS", "BYPASS")) for r in answers] == [(200, True)] * 3
        assert calls(counts, target) == 4  # the good instance's fill, and each of the bad one's
        line = bad.wait_log(rf"Cache backend redis://127\.0\.0\.1:{redis.port}/0 (unreachable|refused)",
                            timeout=5)
        assert line is not None
        for srv in (good, bad):
            assert "s3cret-pw" not in srv.stderr_text() and "wrong-pw" not in srv.stderr_text()
    finally:
        redis.kill()
        shutil.rmtree(redis.dir, ignore_errors=True)


def test_redis_unreachable_at_start_is_a_warning(server):
    url = f"redis://127.0.0.1:{free_port()}/0"
    srv = server(APP, "--cache", "--cache-backend", url, *KEY)
    for _ in range(3):
        r = get(srv, "/nobody?cc=max-age=60")
        assert r.status_code == 200
        assert xcs(r) in ("BYPASS", "MISS")
    srv.wait_log("unreachable", timeout=5)


def test_a_bad_url_is_refused_at_start(server):
    srv = server(APP, "--cache", "--cache-backend", "redis://:notaport", expect_fail=True)
    assert srv.returncode != 0
    err = srv.stderr_text()
    assert "cache_backend" in err and "notaport" in err, err


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture
def tls_redis(tmp_path):
    """A ``redis-server`` serving TLS only, with a certificate for localhost from a test CA (the
    servers under test trust it through ``SSL_CERT_FILE``)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make the test certificates)")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, capture_output=True, check=True, timeout=30)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=ferrocorn-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
            "-subj", "/CN=localhost")
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "srv.pem", "-days", "1", "-extfile", "ext.cnf")
    port = free_port()
    r = Redis(None, "--tls-port", str(port), "--tls-cert-file", str(tmp_path / "srv.pem"),
              "--tls-key-file", str(tmp_path / "srv.key"), "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
              "--tls-auth-clients", "no")
    r.port = 0  # plain TCP off; checked over TLS below
    r.proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", r.dir, *r.extra],
        stdout=r.log, stderr=subprocess.STDOUT,
    )
    ca = str(tmp_path / "ca.pem")
    ping = ["redis-cli", "--tls", "--cacert", ca, "-h", "localhost", "-p", str(port), "PING"]
    try:
        wait_until(lambda: subprocess.run(ping, capture_output=True, text=True, timeout=5).stdout.strip() == "PONG",
                   10, "redis-server over TLS")
        yield f"rediss://localhost:{port}/0", ca
    finally:
        r.kill()
        shutil.rmtree(r.dir, ignore_errors=True)


def test_rediss_shares_entries_over_tls(tls_redis, server, counts):
    url, ca = tls_redis
    env = {"CACHE_BACKEND_COUNTS": str(counts), "SSL_CERT_FILE": ca}
    flags = ["--cache", "--cache-backend", url, *KEY, *PATIENT]
    a, b = server(APP, *flags, env=env), server(APP, *flags, env=env)
    target = "/tls?cc=max-age=60"
    assert xcs(get(a, target)) == "MISS"
    assert xcs(get(b, target)) == "HIT"
    assert calls(counts, target) == 1
    assert "unreachable" not in a.stderr_text() + b.stderr_text()
    app = server(APP_CACHE, "--cache-backend", url, *PATIENT, env={"SSL_CERT_FILE": ca})
    assert op(app, "/set", k="secure", v="7", t="60")["result"] is True
    assert op(app, "/incr", k="secure")["result"] == 8


# -- a Redis Cluster ------------------------------------------------------------------------------


@pytest.fixture
def cluster():
    nodes: list[Redis] = []
    try:
        for _ in range(3):
            port = free_cluster_port()
            r = Redis(port, "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                      "--cluster-node-timeout", "2000")
            nodes.append(r.start())
        made = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        for n in nodes:
            wait_until(lambda n=n: "cluster_state:ok" in cli(n.port, "CLUSTER", "INFO"), 15, "cluster_state:ok")
        yield nodes
    finally:
        for n in nodes:
            n.kill()
            shutil.rmtree(n.dir, ignore_errors=True)


def test_a_cluster_spreads_entries_and_purges_on_every_node(cluster, pair, counts, server):
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in cluster)
    a, b = pair(url)
    targets = [f"/c/{i}?cc=max-age=60" for i in range(24)]
    assert all(xcs(get(a, t)) == "MISS" for t in targets)
    assert all(xcs(get(b, t)) == "HIT" for t in targets)
    assert all(int(cli(n.port, "DBSIZE")) > 0 for n in cluster), [cli(n.port, "DBSIZE") for n in cluster]
    assert sum(calls(counts, t) for t in targets) == len(targets)
    assert purge(b, "/c/*") == (200, len(targets))
    assert xcs(get(a, targets[3])) == "MISS"
    assert purge(a, targets[3].split("?")[0] + "?cc=max-age=60") == (200, 1)

    app = server(APP_CACHE, "-w", "2", "--cache-backend", url, *PATIENT)
    for i in range(12):
        assert op(app, "/set", k=f"app{i}", v=str(i))["result"] is True
    assert [op(app, "/incr", k=f"app{i}")["result"] for i in range(12)] == list(range(1, 13))
    assert op(app, "/clear")["result"] is True  # SCAN + DEL on every master
    assert op(app, "/get", k="app5")["result"] == "<missing>"
    assert xcs(get(b, targets[4])) == "MISS"  # gone by the purge above, not by clear()
    assert xcs(get(a, targets[4])) == "HIT"  # clear() leaves the response cache alone


def test_a_cluster_node_killed_mid_run_passes_through_then_recovers(cluster, server, counts):
    """One of the three masters SIGKILLed under a request loop: the cluster goes down (no
    replicas), every answer is still a 200 from the app, and once the node is back (rejoining
    from its nodes.conf, empty) the entries are filled again and answered as HITs."""
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in cluster)
    srv = server(APP, "-w", "2", "--cache", "--cache-backend", url, *KEY,
                 env={"CACHE_BACKEND_COUNTS": str(counts)})
    targets = [f"/cd/{i}?cc=max-age=60" for i in range(9)]
    for t in targets:
        assert xcs(get(srv, t)) == "MISS"
    wait_until(lambda: all(xcs(get(srv, t)) == "HIT" for t in targets), 10, "every key a HIT")
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def loop():
        i = 0
        while not stop.is_set():
            r = get(srv, targets[i % len(targets)])
            seen.append((r.status_code, xcs(r)))
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        cluster[0].kill()
        srv.wait_log(r"Cache backend redis\+cluster://\S+ (unreachable|refused)", timeout=10)
        # the others mark the cluster failed after --cluster-node-timeout (2 s)
        wait_until(lambda: "cluster_state:fail" in cli(cluster[1].port, "CLUSTER", "INFO"), 10,
                   "the cluster down without its node")
        before = len(seen)
        wait_until(lambda: len(seen) >= before + 20, 10, "requests answered while the cluster is down")
        assert "HIT" not in {s for _, s in seen[before + 5:]}, "no HIT from a failed cluster"
        cluster[0].restart()
        for n in cluster:
            wait_until(lambda n=n: "cluster_state:ok" in cli(n.port, "CLUSTER", "INFO"), 15, "cluster_state:ok")
        wait_until(lambda: [s for _, s in seen[-len(targets):]] == ["HIT"] * len(targets), 20,
                   "every key a HIT again")
    finally:
        stop.set()
        t.join(10)
    assert all(status == 200 for status, _ in seen), sorted(set(seen))
    assert {s for _, s in seen} <= {"HIT", "MISS", "BYPASS"}, sorted(set(seen))
