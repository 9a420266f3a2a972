#!/usr/bin/env python3
"""Chaos under continuous load, for what ferrocorn talks to: the cache's Redis, killed and
restarted, and an upstream of ``ferrocorn balance``, killed and restarted.

Usage (from the repository root)::

    python benches/chaos_backends.py --scenario redis|upstream [--duration 30] [--every 3]
        [--down SECONDS] [--out FILE.md] [--keep-logs]

``--scenario redis``: a ``redis-server`` (``--save '' --appendonly no``, on a free loopback
port, started and stopped by its PID) and ``ferrocorn -w 2 -k gthread --threads 4 --cache
--cache-backend redis://127.0.0.1:PORT/0`` serving a small app: ``/cached`` answers with
``Cache-Control: max-age=1`` (so its entry keeps being refilled), ``/appcache`` calls
``ferrocorn.cache`` (``incr("hits")``, ``set`` and ``get`` of a value) and answers 200 whatever
they returned (an exception raised by the cache would be a 500). Two ``ferrocorn bench``
clients request both paths for the whole time. Every ``--every`` seconds Redis goes away —
SIGKILL and a clean ``SHUTDOWN NOSAVE`` in turn — and is started again on the same port
``--down`` seconds (1) later; after each restart, plain requests to ``/cached`` time how long
until it is answered from the cache again. Checks:

* every answer is a 200: no 5xx, no connection error (Redis away means pass-through);
* after the last restart ``/cached`` is a HIT again within 10 s, and at the end a plain
  ``/appcache`` shows the app cache storing in Redis again (``incr`` above 1, ``get`` finds
  the value);
* the error log has a warning about Redis, and no more than one per worker per 10 s (the
  documented rate); the lines mentioning Redis are counted in the report;
* the workers are the ones it started with (none crashed); the master's descriptors did not
  grow and its RSS grew by less than 2 MiB; no process of the server, nor any redis-server,
  outlives its TERM; no file is left in the server's ``TMPDIR``.

``--scenario upstream``: three upstreams, each ``ferrocorn -w 1 -k gthread --threads 4
--keep-alive 10`` with an app that answers ``X-Upstream: NAME`` (and a POST with its body's
length), behind ``ferrocorn balance -w 2 --upstream-keepalive-timeout 5 --upstream 'ADDR
max_fails=1 fail_timeout=2s'`` ×3 (the balancer drops idle connections before the upstreams
would, as docs/balance.md asks, and soon enough for the run to wait it out). A GET client
(closed loop, 8 connections) and a POST client (a 64-byte body, 4 req/s) run the whole time.
Every ``--every`` seconds the next upstream in turn has its whole process group (master and
worker) SIGKILLed and is started again on the same port ``--down`` seconds (2) later.
Checks:

* no GET fails (an idempotent request goes to the next upstream); at most 2 POSTs per kill
  fail (a POST that had reached the killed upstream is not sent twice: 502);
* after the last restart every upstream gets traffic again (``X-Upstream`` over plain
  requests at the end);
* the balancer's master's descriptors did not grow and its RSS grew by less than 2 MiB; its
  workers (the same pids at the end) held no more upstream connections as the load ended than
  the clients' concurrency allows (3 × 10), and once every pooled connection has been idle
  past the timeout they hold no socket to an upstream that is gone (closed by the upstream,
  or reset) and no more descriptors than before the load (``/proc/PID/fd`` and
  ``/proc/net/tcp``; the report also says how many pooled connections to a killed upstream
  were still open as the load ended);
* no process of the balancer or of any upstream (every generation) outlives its TERM or
  SIGKILL; no file is left in the servers' ``TMPDIR``.

The report is printed (and appended to ``--out``) in the style of RELIABILITY.md's chaos
sections; the exit status is 1 when a check failed. Bounded: ``--duration`` seconds of load
plus start-up, the end checks (≤ 20 s) and stops of at most 20 s each. Every process is
stopped by its PID (a killed upstream by its process group, which is its own session).
Standard library only; Linux only (/proc).
"""

import argparse
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (benches/compare.py: Server, Workspace, free_port, /proc helpers)
from chaos import (  # noqa: E402  (benches/chaos.py: the shared chaos helpers)
    CLIENT_TABLE_HEAD,
    alive,
    chaos_workspace,
    client_row,
    collect,
    failed,
    fd_count,
    start_client,
    stop_master,
    workers_of,
)

log = compare.log

REDIS_APP = '''
from ferrocorn import cache

VALUE = {"text": "chaos", "numbers": list(range(16))}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    headers = [("Content-Type", "text/plain")]
    if path == "/cached":
        body = b"cached answer"
        headers.append(("Cache-Control", "max-age=1"))
    elif path == "/appcache":
        # Whatever the cache returns, the answer is a 200; an exception is a 500.
        hits = cache.incr("hits")
        cache.set("value", VALUE, timeout=30)
        found = cache.get("value") == VALUE
        body = f"{hits} {int(found)}".encode()
    else:
        body = b"ok"
    headers.append(("Content-Length", str(len(body))))
    start_response("200 OK", headers)
    return [body]
'''

UPSTREAM_APP = '''
import os

NAME = os.environ.get("CHAOS_UPSTREAM", "?")


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        body = str(len(environ["wsgi.input"].read())).encode()
    else:
        body = NAME.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Upstream", NAME)])
    return [body]
'''

GET_CONNECTIONS = 8
POST_BODY = b"p" * 64
POST_PER_KILL = 2          # POSTs allowed to fail per upstream killed
WARN_EVERY_S = 10          # a worker's Redis warnings: at most one per 10 s (docs/cache.md)
RECOVERY_S = 10.0          # the longest wait for a HIT after Redis is back
UPSTREAM_FAIL_TIMEOUT = 2  # seconds, the upstreams' fail_timeout
# The balancer closes a pooled connection idle for this long (--upstream-keepalive-timeout;
# 60 s by default, shortened so the run can wait it out), and the upstreams keep idle
# connections longer (--keep-alive), as docs/balance.md asks: then a pooled connection that the
# upstream closed is one whose upstream was killed, and none may outlive the idle timeout.
BALANCER_IDLE_TIMEOUT = 5
UPSTREAM_KEEP_ALIVE = 10
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


# --------------------------------------------------------------------------
# plain requests
# --------------------------------------------------------------------------


def get(url, timeout=5.0):
    """One GET on a new connection: ``(status, headers, body)``; status is the exception's
    name when there was no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except OSError as e:
        return type(e).__name__, {}, b""


# --------------------------------------------------------------------------
# /proc: a process's sockets
# --------------------------------------------------------------------------


def tcp_table():
    """{inode: (local port, remote port, state name)} of every TCP socket (v4 and v6)."""
    table = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                    if inode:
                        table[inode] = (int(local.rsplit(":", 1)[1], 16),
                                        int(remote.rsplit(":", 1)[1], 16),
                                        TCP_STATES.get(int(state, 16), state))
        except OSError:
            pass
    return table


def unix_inodes():
    try:
        with open("/proc/net/unix") as f:
            next(f)
            return {int(line.split()[6]) for line in f if len(line.split()) >= 7}
    except OSError:
        return set()


def fd_kinds(pid, upstream_ports, table=None, unix=None):
    """``pid``'s descriptors by kind: ``total``, ``upstream`` (TCP connections to an upstream
    port, live: ESTABLISHED), ``stale`` (TCP connections to an upstream port in any other state,
    e.g. CLOSE_WAIT after the upstream went away), ``dead`` (sockets in no TCP or unix table: a
    connection reset and never closed), ``other`` (everything else: listeners, client
    connections, unix sockets, files, pipes, eventfds), and ``stale_conns``, the (local port,
    upstream port) of each stale one; None when ``pid`` is gone."""
    table = tcp_table() if table is None else table
    unix = unix_inodes() if unix is None else unix
    kinds = {"total": 0, "upstream": 0, "stale": 0, "dead": 0, "other": 0, "stale_conns": []}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    inodes = []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds["total"] += 1
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.append(int(m.group(1)))
        else:
            kinds["other"] += 1
    if any(i not in table and i not in unix for i in inodes):
        # A socket made since the tables were read (under load) is in the next reading.
        table, unix = tcp_table(), unix_inodes()
    for inode in inodes:
        if inode in table:
            local, remote, state = table[inode]
            if remote in upstream_ports and state == "ESTABLISHED":
                kinds["upstream"] += 1
            elif remote in upstream_ports:
                kinds["stale"] += 1
                kinds["stale_conns"].append((local, remote))
            else:
                kinds["other"] += 1
        elif inode in unix:
            kinds["other"] += 1
        else:
            kinds["dead"] += 1
    return kinds


def sum_kinds(samples):
    out = {"total": 0, "upstream": 0, "stale": 0, "dead": 0, "other": 0, "stale_conns": []}
    for s in samples:
        for k in out:
            out[k] += (s or {}).get(k, 0 if k != "stale_conns" else [])
    return out


def upstream_conns(pids, port):
    """The (local port, ``port``) of every TCP connection the processes ``pids`` hold to
    ``port``."""
    table = tcp_table()
    conns = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
            if m and int(m.group(1)) in table and table[int(m.group(1))][1] == port:
                conns.add(table[int(m.group(1))][:2])
    return conns


def fmt_kinds(k):
    return (f"{k['total']} ({k['upstream']} live upstream connections, {k['stale']} closed by "
            f"the upstream, {k['dead']} reset, {k['other']} other)")


# --------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------


class Redis:
    """A ``redis-server`` on ``port`` that keeps nothing on disk, in its own session; every
    generation is remembered by PID and start time."""

    def __init__(self, port, workdir, logdir, env):
        self.port = port
        self.workdir = workdir
        self.logdir = logdir
        self.env = env
        self.proc = None
        self.generation = 0
        self.known = {}   # pid -> start time, every redis-server started

    def start(self, timeout=10.0):
        """Start it and wait for PONG; an error text, or None."""
        self.generation += 1
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.workdir,
                "--daemonize", "no", "--loglevel", "warning"]
        out = os.path.join(self.logdir, f"redis-{self.generation}.log")
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        st = compare.read_proc_stat_pid(self.proc.pid)
        if st is not None:
            self.known[self.proc.pid] = st[3]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"redis-server exited with {self.proc.returncode} ({out})"
            if self.command(b"PING") == b"+PONG":
                return None
            time.sleep(0.05)
        return f"redis-server did not answer PING within {timeout:.0f} s"

    def command(self, *words):
        """Send one command (RESP) and return the first reply line, or None."""
        msg = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(msg)
                return s.makefile("rb").readline().rstrip(b"\r\n")
        except OSError:
            return None

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def shutdown(self):
        """``SHUTDOWN NOSAVE`` (what ``redis-cli -p PORT shutdown nosave`` sends); SIGKILL if
        it has not exited within 10 s."""
        self.command(b"SHUTDOWN", b"NOSAVE")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def survivors(self):
        return [pid for pid, start in self.known.items() if alive(pid, start)]


def time_to_hit(url, since, deadline_s, statuses):
    """Plain GETs of ``url`` until one is answered from the cache (``X-Cache-Status: HIT``);
    the seconds from ``since`` to that answer, or None within ``deadline_s``. Every status
    seen is counted into ``statuses``."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status, headers, _ = get(url)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200 and headers.get("X-Cache-Status") == "HIT":
            return time.monotonic() - since
        time.sleep(0.05)
    return None


def run_redis(args, report, failures):
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found on PATH (apt-get install -y redis-server)")
    down = 1.0 if args.down is None else args.down
    ws, run_tmp, env = chaos_workspace("ferrocorn-chaos-redis-", REDIS_APP)
    redis_dir = os.path.join(ws.tmp, "redis")
    os.makedirs(redis_dir)
    redis_port = compare.free_port()
    redis = Redis(redis_port, redis_dir, ws.logdir, ws.env)
    port = compare.free_port()
    backend = f"redis://127.0.0.1:{redis_port}/0"
    workers = 2
    argv = ["ferrocorn", "-b", f"127.0.0.1:{port}", "-w", str(workers), "-k", "gthread",
            "--threads", "4", "--cache", "--cache-backend", backend, "--graceful-timeout", "5",
            "chaos_app:app"]
    srv = compare.Server(argv, env, ws.logdir, "chaos-redis-ferrocorn")
    events = []
    recoveries = []        # seconds from each restart to the first HIT (None: none seen)
    probe_statuses = {}    # statuses of the plain requests
    try:
        err = redis.start()
        if err:
            raise SystemExit(err)
        srv.start()
        err = srv.wait_ready(port, 20)
        if err:
            raise SystemExit(f"server did not start: {err}")
        master = srv.proc.pid
        base = f"http://127.0.0.1:{port}"
        time.sleep(1.0)
        srv.snapshot()
        workers_before = workers_of(master)
        fds_before, rss_before = fd_count(master), compare.rss_kib(master)
        clients = [
            start_client("cached", base + "/cached", ["-c", "4", "-t", "1"], args.duration,
                         env, ws.logdir),
            start_client("appcache", base + "/appcache", ["-c", "4", "-t", "1"], args.duration,
                         env, ws.logdir),
        ]
        started = time.monotonic()
        first_event = None
        n = 0
        while time.monotonic() - started < args.duration - args.every:
            time.sleep(max(0.0, started + (n + 1) * args.every - time.monotonic()))
            srv.snapshot()
            how = "SIGKILL" if n % 2 == 0 else "SHUTDOWN NOSAVE"
            first_event = first_event or time.monotonic()
            if how == "SIGKILL":
                redis.kill()
            else:
                redis.shutdown()
            time.sleep(down)
            err = redis.start()
            restarted = time.monotonic()
            if err:
                failures.append(f"Redis restart {n + 1}: {err}")
                break
            events.append(how)
            recoveries.append(time_to_hit(base + "/cached", restarted, RECOVERY_S,
                                          probe_statuses))
            n += 1
        results = {c[0]: collect(c) for c in clients}
        srv.snapshot()
        time.sleep(1.0)

        # The end: /cached from the cache, /appcache storing in Redis again.
        end_hit = time_to_hit(base + "/cached", time.monotonic(), RECOVERY_S, probe_statuses)
        appcache_end = None
        deadline = time.monotonic() + RECOVERY_S
        while time.monotonic() < deadline:
            status, _, body = get(base + "/appcache")
            probe_statuses[status] = probe_statuses.get(status, 0) + 1
            if status == 200:
                appcache_end = body.decode(errors="replace")
                hits, found = (int(x) for x in appcache_end.split())
                if hits > 1 and found:
                    break
            time.sleep(0.2)
        srv.snapshot()
        workers_after = workers_of(master)
        fds_after, rss_after = fd_count(master), compare.rss_kib(master)
        worker_pids = set(srv.known) - {master}
        span = time.monotonic() - (first_event or time.monotonic())

        survivors = stop_master(master, srv, dict(srv.known), failures)
        redis.stop()
        survivors += redis.survivors()
        leftovers = sorted(os.listdir(run_tmp))

        with open(srv.err_path, errors="replace") as f:
            errlog = f.read().splitlines()
        redis_lines = [ln for ln in errlog if "redis" in ln.lower()]
        warnings = [ln for ln in redis_lines if "unreachable" in ln or "refused" in ln]
        back = [ln for ln in redis_lines if "reachable again" in ln]
        allowed_warnings = len(worker_pids) * (math.ceil(span / WARN_EVERY_S) + 1)
        other_problems = [ln for ln in errlog if re.search(r"\[(ERROR|CRITICAL)\]|Traceback", ln)]

        kills = events.count("SIGKILL")
        shutdowns = events.count("SHUTDOWN NOSAVE")
        for name in ("cached", "appcache"):
            r = results[name]
            if r is None:
                failures.append(f"{name}: the client reported nothing")
            elif failed(r) or set(r.get("status", {})) - {"200"}:
                failures.append(f"{name}: statuses {r.get('status')}, errors {r.get('errors')}")
        bad_probes = {k: v for k, v in probe_statuses.items() if k != 200}
        if bad_probes:
            failures.append(f"plain requests answered {bad_probes}")
        if not events:
            failures.append("no event happened")
        elif recoveries[-1] is None:
            failures.append(f"/cached not a HIT within {RECOVERY_S:.0f} s of the last restart")
        if end_hit is None:
            failures.append("/cached not a HIT at the end")
        if appcache_end is None or not (int(appcache_end.split()[0]) > 1
                                         and appcache_end.split()[1] == "1"):
            failures.append(f"the app cache does not store in Redis at the end "
                            f"(/appcache answered {appcache_end!r}: incr, found)")
        if workers_after != workers_before:
            failures.append(f"workers replaced {workers_before} -> {workers_after}")
        if events and not warnings:
            failures.append("no warning about Redis in the error log")
        if len(warnings) > allowed_warnings:
            failures.append(f"{len(warnings)} Redis warnings, more than one per worker per "
                            f"{WARN_EVERY_S} s ({allowed_warnings})")
        if other_problems:
            failures.append(f"{len(other_problems)} error lines in the log, e.g. "
                            f"{other_problems[0][:200]!r}")
        if fds_after is not None and fds_before is not None and fds_after > fds_before:
            failures.append(f"master descriptors grew {fds_before} -> {fds_after}")
        if rss_after is not None and rss_before is not None and rss_after - rss_before > 2048:
            failures.append(f"master RSS grew {rss_before} -> {rss_after} KiB")
        if survivors:
            failures.append(f"processes outlived their TERM: {survivors}")
        if leftovers:
            failures.append(f"files left in TMPDIR: {leftovers[:10]}")

        done = [r for r in recoveries if r is not None]
        report.append(f"### Chaos: the cache's Redis killed and restarted (`-k gthread -w "
                      f"{workers} --threads 4 --cache --cache-backend redis://…`), "
                      f"{args.duration} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        report.append("")
        report.append(f"- events ({len(events)}, every {args.every:g} s): {kills} SIGKILL and "
                      f"{shutdowns} SHUTDOWN NOSAVE of redis-server, each started again on the "
                      f"same port {down:g} s later (empty: `--save '' --appendonly no`)")
        report.append("")
        report.append(CLIENT_TABLE_HEAD)
        for name, desc in (("cached", "`/cached`, max-age=1"),
                           ("appcache", "`/appcache`, incr + set + get")):
            report.append(client_row(f"{name} ({desc})", results[name]))
        report.append("")
        report.append(f"- plain requests (after each restart and at the end): "
                      f"{sum(probe_statuses.values())}, statuses "
                      f"{dict(sorted((str(k), v) for k, v in probe_statuses.items()))}")
        report.append(f"- `/cached` answered from the cache again after each restart within "
                      f"{max(done):.2f} s (median {sorted(done)[len(done) // 2]:.2f} s; "
                      f"{len(recoveries) - len(done)} not within {RECOVERY_S:.0f} s)"
                      if done else "- `/cached`: no HIT after any restart")
        report.append(f"- at the end: `/cached` HIT {'yes' if end_hit is not None else 'NO'}; "
                      f"`/appcache` answered `{appcache_end}` (incr, value found)")
        report.append(f"- error log: {len(redis_lines)} lines mentioning Redis — {len(warnings)} "
                      f"warnings (allowed: one per worker per {WARN_EVERY_S} s, "
                      f"{len(worker_pids)} workers over {span:.0f} s: {allowed_warnings}), "
                      f"{len(back)} \"reachable again\", "
                      f"{len(redis_lines) - len(warnings) - len(back)} other; error lines: "
                      f"{len(other_problems)}")
        report.append(f"- workers the same {len(workers_before)} pids at the end: "
                      f"{'yes' if workers_after == workers_before else 'NO'}; master descriptors "
                      f"{fds_before} -> {fds_after}, RSS {rss_before} -> "
                      f"{rss_after} KiB; processes left after TERM: {len(survivors)} (server and "
                      f"every redis-server); files left in TMPDIR: {len(leftovers)}")
        report.append(f"- result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}")
    except KeyboardInterrupt:
        log("interrupted")
        failures.append("interrupted")
    finally:
        srv.stop()
        redis.stop()
        ws.close(args.keep_logs)


# --------------------------------------------------------------------------
# upstream
# --------------------------------------------------------------------------


def kill_group(srv):
    """SIGKILL the instance's whole process group (its own session: master and workers) and
    reap the master; returns the pids of the group still alive 2 s later."""
    snap = srv.snapshot()
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        left = [pid for pid, st in snap.items() if alive(pid, st[3])]
        if not left:
            return []
        time.sleep(0.05)
    return left


def run_upstream(args, report, failures):
    down = 2.0 if args.down is None else args.down
    ws, run_tmp, env = chaos_workspace("ferrocorn-chaos-upstream-", UPSTREAM_APP)
    names = ["a", "b", "c"]
    ports = {name: compare.free_port() for name in names}
    generation = {name: 1 for name in names}

    def upstream(name):
        argv = ["ferrocorn", "-b", f"127.0.0.1:{ports[name]}", "-w", "1", "-k", "gthread",
                "--threads", "4", "--keep-alive", str(UPSTREAM_KEEP_ALIVE),
                "--graceful-timeout", "5", "--no-control-socket", "chaos_app:app"]
        return compare.Server(argv, dict(env, CHAOS_UPSTREAM=name), ws.logdir,
                              f"upstream-{name}-{generation[name]}")

    ups = {name: upstream(name) for name in names}
    retired = []   # the killed generations (their Server objects, for the final stop)
    port = compare.free_port()
    argv = ["ferrocorn", "balance", "-b", f"127.0.0.1:{port}", "-w", "2",
            "--upstream-keepalive-timeout", str(BALANCER_IDLE_TIMEOUT), "--graceful-timeout", "5"]
    for name in names:
        argv += ["--upstream", f"127.0.0.1:{ports[name]} max_fails=1 "
                               f"fail_timeout={UPSTREAM_FAIL_TIMEOUT}s"]
    bal = compare.Server(argv, env, ws.logdir, "chaos-balance")
    events = []
    probe_statuses = {}
    to_killed = set()   # (local port, upstream port) of the balancer's connections to a killed one
    try:
        for name in names:
            ups[name].start()
        for name in names:
            err = ups[name].wait_ready(ports[name], 20)
            if err:
                raise SystemExit(f"upstream {name} did not start: {err}")
            ups[name].snapshot()
        bal.start()
        err = bal.wait_ready(port, 20)
        if err:
            raise SystemExit(f"balancer did not start: {err}")
        master = bal.proc.pid
        base = f"http://127.0.0.1:{port}"
        upstream_ports = set(ports.values())
        balancers = workers_of(master)
        bal.snapshot()
        # Before the load: once wait_ready's connection has been idle past the timeout.
        time.sleep(BALANCER_IDLE_TIMEOUT + 1.0)
        fds_before, rss_before = fd_count(master), compare.rss_kib(master)
        workers_before = sum_kinds(fd_kinds(p, upstream_ports) for p in balancers)
        clients = [
            start_client("get", base + "/", ["-c", str(GET_CONNECTIONS), "-t", "1"],
                         args.duration, env, ws.logdir),
            start_client("post", base + "/", ["-c", "2", "--rate", "4", "-m", "POST",
                                              "--body", POST_BODY.decode()],
                         args.duration, env, ws.logdir),
        ]
        time.sleep(1.0)
        loaded = sum_kinds(fd_kinds(p, upstream_ports) for p in balancers)
        started = time.monotonic()
        n = 0
        last_restart = time.monotonic()
        while time.monotonic() - started < args.duration - args.every:
            time.sleep(max(0.0, started + (n + 1) * args.every - time.monotonic()))
            name = names[n % len(names)]
            bal.snapshot()
            to_killed |= upstream_conns(balancers, ports[name])
            left = kill_group(ups[name])
            if left:
                failures.append(f"upstream {name}: {left} outlived SIGKILL of its process group")
            retired.append(ups[name])
            time.sleep(down)
            generation[name] += 1
            ups[name] = upstream(name)
            ups[name].start()
            err = ups[name].wait_ready(ports[name], 20)
            last_restart = time.monotonic()
            if err:
                failures.append(f"upstream {name} restart: {err}")
                break
            ups[name].snapshot()
            events.append(name)
            n += 1
        results = {c[0]: collect(c) for c in clients}
        bal.snapshot()
        after_load = sum_kinds(fd_kinds(p, upstream_ports) for p in balancers)

        # Every upstream answers again (once its fail_timeout has run out).
        time.sleep(max(0.0, last_restart + UPSTREAM_FAIL_TIMEOUT + 1 - time.monotonic()))
        seen = {}
        for _ in range(5):
            seen = {}
            for _ in range(30):
                status, headers, _ = get(base + "/")
                probe_statuses[status] = probe_statuses.get(status, 0) + 1
                if status == 200:
                    who = headers.get("X-Upstream")
                    seen[who] = seen.get(who, 0) + 1
            if all(seen.get(name) for name in names):
                break
            time.sleep(1.0)
        # The end: every pooled connection has been idle past the timeout.
        time.sleep(BALANCER_IDLE_TIMEOUT + 1.0)
        balancers_after = workers_of(master)
        workers_after = sum_kinds(fd_kinds(p, upstream_ports) for p in balancers_after)
        fds_after, rss_after = fd_count(master), compare.rss_kib(master)

        survivors = stop_master(master, bal, dict(bal.known), failures, "the balancer")
        for name in names:
            ups[name].snapshot()
            survivors += stop_master(ups[name].proc.pid, ups[name], dict(ups[name].known),
                                     failures, f"upstream {name}")
        for old in retired:
            survivors += [pid for pid, start in old.known.items() if alive(pid, start)]
        leftovers = sorted(os.listdir(run_tmp))
        with open(bal.err_path, errors="replace") as f:
            errlog = f.read().splitlines()
        upstream_lines = [ln for ln in errlog if re.search(r"\[(WARNING|ERROR|CRITICAL)\]", ln)]
        reasons = {}   # what failed, as the balancer logged it: "connect failed", ...
        for ln in upstream_lines:
            m = re.search(r"failed \((\w+)\): ([^:;(]+)", ln)
            reason = f"{m.group(1)}: {m.group(2).strip()}" if m else ln.split("] ", 3)[-1][:60]
            reasons[reason] = reasons.get(reason, 0) + 1

        kills = len(events)
        # While the load ran, a worker kept at most one connection per request it had in flight
        # to an upstream at once: the clients' connections, per upstream.
        max_pooled = len(names) * (GET_CONNECTIONS + 2)
        stale_killed = sum(1 for c in after_load["stale_conns"] if c in to_killed)
        get_r, post_r = results["get"], results["post"]
        get_failed, post_failed = failed(get_r), failed(post_r)
        if get_failed is None:
            failures.append("the GET client reported nothing")
        elif get_failed:
            failures.append(f"GET: {get_failed} failed (statuses {get_r.get('status')}, "
                            f"errors {get_r.get('errors')})")
        if post_failed is None:
            failures.append("the POST client reported nothing")
        elif post_failed > POST_PER_KILL * kills:
            failures.append(f"POST: {post_failed} failed, more than {POST_PER_KILL} per kill "
                            f"(statuses {post_r.get('status')}, errors {post_r.get('errors')})")
        bad_probes = {k: v for k, v in probe_statuses.items() if k != 200}
        if bad_probes:
            failures.append(f"plain GETs at the end answered {bad_probes}")
        missing = [name for name in names if not seen.get(name)]
        if missing:
            failures.append(f"no traffic to upstream(s) {missing} at the end ({seen})")
        if not events:
            failures.append("no event happened")
        if fds_after is not None and fds_before is not None and fds_after > fds_before:
            failures.append(f"balancer master descriptors grew {fds_before} -> {fds_after}")
        if rss_after is not None and rss_before is not None and rss_after - rss_before > 2048:
            failures.append(f"balancer master RSS grew {rss_before} -> {rss_after} KiB")
        if sorted(balancers_after) != sorted(balancers):
            failures.append(f"balancer workers changed {balancers} -> {balancers_after}")
        if after_load["upstream"] + after_load["stale"] > max_pooled:
            failures.append(f"balancer workers held {after_load['upstream'] + after_load['stale']}"
                            f" upstream connections after the load, more than the clients' "
                            f"concurrency allows ({max_pooled})")
        if workers_after["stale"] or workers_after["dead"]:
            failures.append(f"balancer workers hold sockets to upstreams that are gone "
                            f"{BALANCER_IDLE_TIMEOUT + 1} s after their last use: "
                            f"{workers_after['stale']} closed by the upstream, "
                            f"{workers_after['dead']} reset")
        if workers_after["total"] > workers_before["total"]:
            failures.append(f"balancer workers' descriptors grew {workers_before['total']} -> "
                            f"{workers_after['total']}")
        if survivors:
            failures.append(f"processes outlived their TERM or SIGKILL: {survivors}")
        if leftovers:
            failures.append(f"files left in TMPDIR: {leftovers[:10]}")

        report.append(f"### Chaos: an upstream killed behind `ferrocorn balance -w 2`, "
                      f"{args.duration} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        report.append("")
        report.append(f"- setup: 3 upstreams `ferrocorn -k gthread -w 1 --threads 4 --keep-alive "
                      f"{UPSTREAM_KEEP_ALIVE}`, each `max_fails=1 fail_timeout="
                      f"{UPSTREAM_FAIL_TIMEOUT}s`; the balancer `--upstream-keepalive-timeout "
                      f"{BALANCER_IDLE_TIMEOUT}`, round robin")
        report.append(f"- events ({kills}, every {args.every:g} s): SIGKILL of one upstream's "
                      f"process group (master and worker), in turn {', '.join(names)}, each "
                      f"started again on the same port {down:g} s later")
        report.append("")
        report.append(CLIENT_TABLE_HEAD)
        report.append(client_row(f"get (closed loop, {GET_CONNECTIONS} connections)", get_r))
        report.append(client_row(f"post ({len(POST_BODY)}-byte body, 4 req/s)", post_r))
        report.append("")
        report.append(f"- GET failures allowed: 0; failed: {get_failed}. POST failures allowed "
                      f"({POST_PER_KILL} per kill): {POST_PER_KILL * kills}; failed: {post_failed}")
        report.append(f"- the balancer's log: {len(upstream_lines)} warnings, by what failed: "
                      f"{reasons}")
        report.append(f"- at the end, {sum(seen.values())} plain GETs: X-Upstream "
                      f"{dict(sorted(seen.items(), key=lambda kv: str(kv[0])))}; statuses of all "
                      f"plain GETs {dict(sorted((str(k), v) for k, v in probe_statuses.items()))}")
        report.append(f"- balancer workers' descriptors (both workers, the same pids at the end: "
                      f"{'yes' if sorted(balancers_after) == sorted(balancers) else 'NO'}): "
                      f"before the load {fmt_kinds(workers_before)}; under load "
                      f"{fmt_kinds(loaded)}; as the load ended {fmt_kinds(after_load)}, of the "
                      f"closed ones {stale_killed} made to an upstream since killed; "
                      f"{BALANCER_IDLE_TIMEOUT + 1} s after the last request "
                      f"{fmt_kinds(workers_after)}")
        report.append(f"- balancer master descriptors {fds_before} -> {fds_after}, RSS "
                      f"{rss_before} -> {rss_after} KiB; processes left after TERM (balancer, "
                      f"every upstream generation): {len(survivors)}; files left in TMPDIR: "
                      f"{len(leftovers)}")
        report.append(f"- result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}")
    except KeyboardInterrupt:
        log("interrupted")
        failures.append("interrupted")
    finally:
        bal.stop()
        for srv in list(ups.values()) + retired:
            srv.stop()
        ws.close(args.keep_logs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", required=True, choices=["redis", "upstream"])
    ap.add_argument("--duration", type=int, default=30, help="seconds of load (30)")
    ap.add_argument("--every", type=float, default=3.0, help="seconds between events (3)")
    ap.add_argument("--down", type=float,
                    help="seconds the killed backend stays down (redis 1, upstream 2)")
    ap.add_argument("--out", help="append the markdown report to this file")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    if args.down is not None and args.down >= args.every:
        ap.error("--down must be shorter than --every")
    report, failures = [], []
    (run_redis if args.scenario == "redis" else run_upstream)(args, report, failures)
    if report:
        compare.emit("\n".join(report), args.out)
    else:
        log("no report: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
