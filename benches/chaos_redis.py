"""benches/chaos_backends.py ``--scenario redis``: the cache's Redis killed and restarted
under load.

A ``redis-server`` (``--save '' --appendonly no``, on a free loopback port, started and
stopped by its PID) and ``ferrocorn -w 2 -k gthread --threads 4 --cache --cache-backend
redis://127.0.0.1:PORT/0`` serving a small app: ``/cached`` answers with ``Cache-Control:
max-age=1`` (so its entry keeps being refilled), ``/appcache`` calls ``ferrocorn.cache``
(``incr("hits")``, ``set`` and ``get`` of a value) and answers 200 whatever they returned (an
exception raised by the cache would be a 500). Two ``ferrocorn bench`` clients request both
paths for the whole time. Every ``--every`` seconds Redis goes away — SIGKILL and a clean
``SHUTDOWN NOSAVE`` in turn — and is started again on the same port ``--down`` seconds (1)
later; after each restart, plain requests to ``/cached`` time how long until it is answered
from the cache again. Checks:

* every answer is a 200: no 5xx, no connection error (Redis away means pass-through);
* after the last restart ``/cached`` is a HIT again within 10 s, and at the end a plain
  ``/appcache`` shows the app cache storing in Redis again (``incr`` above 1, ``get`` finds
  the value);
* the error log has a warning about Redis, and no more than one per worker per 10 s (the
  documented rate); the lines mentioning Redis are counted in the report;
* the workers are the ones it started with (none crashed); the master's descriptors did not
  grow and its RSS grew by less than 2 MiB; no process of the server, nor any redis-server,
  outlives its TERM; no file is left in the server's ``TMPDIR``.
"""

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import compare  # benches/compare.py: Server, free_port, /proc helpers
from chaos import (CLIENT_TABLE_HEAD, alive, chaos_workspace, client_row, collect, failed,
                   fd_count, get, master_growth, start_client, stop_master, workers_of)

APP = '''
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

WARN_EVERY_S = 10          # a worker's Redis warnings: at most one per 10 s (docs/cache.md)
RECOVERY_S = 10.0          # the longest wait for a HIT after Redis is back
WORKERS = 2


class Redis(compare.Server):
    """A ``redis-server`` on ``port`` that keeps nothing on disk, in its own session. Each
    :meth:`start` is a new generation on the same port, with its own log; ``known`` holds
    every generation, so :meth:`stop` kills by PID any that is left."""

    def __init__(self, port, workdir, logdir, env):
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
                "--loglevel", "warning"]
        super().__init__(argv, env, logdir, "redis")
        self.port, self.logdir, self.generation = port, logdir, 0

    def start(self, timeout=10.0):
        """Start it and wait for PONG; an error text, or None."""
        self.generation += 1
        self.out_path, self.err_path = (os.path.join(self.logdir, f"redis-{self.generation}.{x}")
                                        for x in ("out", "err"))
        super().start()
        self.snapshot()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"redis-server exited with {self.proc.returncode} ({self.out_path})"
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


def appcache_at_end(url, statuses):
    """Plain GETs of ``/appcache`` until the app cache stores in Redis again (``incr`` above
    1, the value found), for up to 10 s; the last body (``"HITS FOUND"``), or None."""
    body = None
    deadline = time.monotonic() + RECOVERY_S
    while time.monotonic() < deadline:
        status, _, raw = get(url)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            body = raw.decode(errors="replace")
            hits, found = body.split()
            if int(hits) > 1 and found == "1":
                break
        time.sleep(0.2)
    return body


def run(args, report, failures):
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found on PATH (apt-get install -y redis-server)")
    down = 1.0 if args.down is None else args.down
    ws, run_tmp, env = chaos_workspace("ferrocorn-chaos-redis-", APP)
    redis_dir = os.path.join(ws.tmp, "redis")
    os.makedirs(redis_dir)
    redis = Redis(compare.free_port(restartable=True), redis_dir, ws.logdir, ws.env)
    port = compare.free_port()
    argv = ["ferrocorn", "-b", f"127.0.0.1:{port}", "-w", str(WORKERS), "-k", "gthread",
            "--threads", "4", "--cache", "--cache-backend", f"redis://127.0.0.1:{redis.port}/0",
            "--graceful-timeout", "5", "chaos_app:app"]
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
        clients = [start_client(name, f"{base}/{name}", ["-c", "4", "-t", "1"], args.duration,
                                env, ws.logdir) for name in ("cached", "appcache")]
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < args.duration - args.every:
            time.sleep(max(0.0, started + (n + 1) * args.every - time.monotonic()))
            srv.snapshot()
            how = "SIGKILL" if n % 2 == 0 else "SHUTDOWN NOSAVE"
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
        appcache_end = appcache_at_end(base + "/appcache", probe_statuses)
        srv.snapshot()
        workers_after = workers_of(master)
        fds_after, rss_after = fd_count(master), compare.rss_kib(master)
        worker_pids = set(srv.known) - {master}
        span = time.monotonic() - (started + args.every)   # since the first event

        survivors = stop_master(master, srv, dict(srv.known), failures)
        if redis.proc.poll() is None:
            survivors += stop_master(redis.proc.pid, redis, dict(redis.known), failures,
                                     "redis-server")
        else:
            survivors += [pid for pid, start in redis.known.items() if alive(pid, start)]
        leftovers = sorted(os.listdir(run_tmp))

        with open(srv.err_path, errors="replace") as f:
            errlog = f.read().splitlines()
        redis_lines = [ln for ln in errlog if "redis" in ln.lower()]
        warnings = [ln for ln in redis_lines if "unreachable" in ln or "refused" in ln]
        back = [ln for ln in redis_lines if "reachable again" in ln]
        allowed_warnings = len(worker_pids) * (math.ceil(span / WARN_EVERY_S) + 1)
        other_problems = [ln for ln in errlog if re.search(r"\[(ERROR|CRITICAL)\]|Traceback", ln)]

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
        if appcache_end is None or int(appcache_end.split()[0]) <= 1 \
                or appcache_end.split()[1] != "1":
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
        master_growth("master", fds_before, fds_after, rss_before, rss_after, failures)
        if survivors:
            failures.append(f"processes outlived their TERM: {survivors}")
        if leftovers:
            failures.append(f"files left in TMPDIR: {leftovers[:10]}")

        done = sorted(r for r in recoveries if r is not None)
        report += [
            f"### Chaos: the cache's Redis killed and restarted (`-k gthread -w {WORKERS} "
            f"--threads 4 --cache --cache-backend redis://…`), {args.duration} s, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "",
            f"- events ({len(events)}, every {args.every:g} s): {events.count('SIGKILL')} SIGKILL "
            f"and {events.count('SHUTDOWN NOSAVE')} SHUTDOWN NOSAVE of redis-server, each "
            f"started again on the same port {down:g} s later (empty: `--save '' --appendonly "
            f"no`)",
            "",
            CLIENT_TABLE_HEAD,
            client_row("cached (`/cached`, max-age=1)", results["cached"]),
            client_row("appcache (`/appcache`, incr + set + get)", results["appcache"]),
            "",
            f"- plain requests (after each restart and at the end): "
            f"{sum(probe_statuses.values())}, statuses "
            f"{dict(sorted((str(k), v) for k, v in probe_statuses.items()))}",
            f"- `/cached` answered from the cache again after each restart within "
            f"{done[-1]:.2f} s (median {done[len(done) // 2]:.2f} s; "
            f"{len(recoveries) - len(done)} not within {RECOVERY_S:.0f} s)"
            if done else "- `/cached`: no HIT after any restart",
            f"- at the end: `/cached` HIT {'yes' if end_hit is not None else 'NO'}; "
            f"`/appcache` answered `{appcache_end}` (incr, value found)",
            f"- error log: {len(redis_lines)} lines mentioning Redis — {len(warnings)} warnings "
            f"(allowed: one per worker per {WARN_EVERY_S} s, {len(worker_pids)} workers over "
            f"{span:.0f} s: {allowed_warnings}), {len(back)} \"reachable again\", "
            f"{len(redis_lines) - len(warnings) - len(back)} other; error lines: "
            f"{len(other_problems)}",
            f"- workers the same {len(workers_before)} pids at the end: "
            f"{'yes' if workers_after == workers_before else 'NO'}; master descriptors "
            f"{fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB; processes left "
            f"after TERM: {len(survivors)} (server and every redis-server); files left in "
            f"TMPDIR: {len(leftovers)}",
            f"- result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
        ]
    except KeyboardInterrupt:
        compare.log("interrupted")
        failures.append("interrupted")
    finally:
        srv.stop()
        redis.stop()
        ws.close(args.keep_logs)
