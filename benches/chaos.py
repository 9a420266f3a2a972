#!/usr/bin/env python3
"""Chaos under continuous load: the server is disturbed every couple of seconds while
`ferrocorn bench` keeps requesting, and afterwards nothing may have leaked.

Usage (from the repository root)::

    python benches/chaos.py [--klass sync] [--workers 4] [--duration 40] [--out FILE.md]

One server (``-w 4 --max-requests 400 --max-requests-jitter 50 --timeout 3``) serves a small
app. Four clients run for the whole time, each a ``ferrocorn bench`` process:

* ``hello``   closed loop, 8 connections, ``GET /``: the load whose failures are counted;
* ``raises``  20 req/s to an endpoint whose app raises: each must be a 500, never a hang;
* ``hangs``   one request every 4 s to an endpoint that sleeps 6 s, past ``--timeout``:
              the worker is recycled (sync: killed by the master; others: 504, then recycled);
* ``uploads`` 4 req/s of a 1.5 MiB body, spooled to a temporary file before the app runs.

Every ``--every`` seconds the next event of the cycle: SIGKILL of a random worker, HUP (new
workers, same master), TTIN (one worker more), SIGKILL again, TTOU (one fewer), and
``--max-requests`` recycles workers all along. Halfway, once, the binary upgrade: USR2 (a new
master re-executed beside the old one, on the same listeners), then TERM to the old master,
which must exit cleanly while the new one serves on; the cycle goes on against the new
master. At the end the master is stopped with TERM.

Checks, printed and turned into the exit status:

* ``hello`` failures (connection errors and non-2xx) are at most what the killed workers
  could have had in flight: 8 (every connection) per SIGKILL, per worker the master killed
  for a timeout, and per worker that stopped;
* every ``raises`` answer is a 500; every ``uploads`` answer a 200 with the body's length;
* the master's open descriptors did not grow, and its RSS grew by less than 2 MiB (the
  master serving at the end, from when it took over);
* no process the master started outlives it; no file is left in the run's ``TMPDIR``.

Bounded: ``--duration`` seconds of load plus start-up and a stop of at most 20 s. Servers and
clients are stopped by PID. Standard library only; Linux only.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (benches/compare.py: Server, Workspace, free_port, /proc helpers)

log = compare.log

APP = '''
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("chaos: the app raised on purpose")
    if path == "/hang":
        time.sleep(6)
    if path == "/upload":
        body = str(len(environ["wsgi.input"].read())).encode()
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

ASGI_APP = '''
import asyncio


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if path == "/raise":
        raise RuntimeError("chaos: the app raised on purpose")
    if path == "/hang":
        await asyncio.sleep(6)
    body = str(size).encode() if path == "/upload" else b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''

UPLOAD_BYTES = 1536 * 1024
HELLO_CONNECTIONS = 8


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def alive(pid, start=None):
    """Whether ``pid`` runs (a zombie does not; with ``start``, only if it is that process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return rest[0] != "Z" and (start is None or int(rest[19]) == start)


def workers_of(master):
    return sorted(pid for pid, st in compare.all_procs().items() if st[0] == master)


def start_client(name, url, extra, duration, env, logdir):
    argv = ["ferrocorn", "bench", "--json", "-d", f"{duration}s", "--timeout", "15s", *extra, url]
    out = open(os.path.join(logdir, f"client-{name}.json"), "wb")
    err = open(os.path.join(logdir, f"client-{name}.err"), "wb")
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    return name, proc, out.name


def collect(client):
    name, proc, path = client
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def chaos_workspace(prefix, app_source):
    """A :class:`compare.Workspace` whose servers run with their own ``TMPDIR`` (checked empty
    at the end) and serve ``chaos_app.py`` (``app_source``) from its ``apps`` directory;
    returns ``(workspace, tmpdir, env)``."""
    ws = compare.Workspace(prefix)
    run_tmp = os.path.join(ws.tmp, "tmpdir")
    os.makedirs(run_tmp)
    apps_dir = os.path.join(ws.tmp, "apps")
    os.makedirs(apps_dir)
    with open(os.path.join(apps_dir, "chaos_app.py"), "w") as f:
        f.write(textwrap.dedent(app_source))
    compare.APPS_DIR = apps_dir
    return ws, run_tmp, dict(ws.env, TMPDIR=run_tmp)


def failed(result, with_statuses=True):
    """A client report's failed requests: its connection errors, plus (``with_statuses``) its
    answers other than 2xx/3xx; None without a report."""
    if not result:
        return None
    errors = sum((result.get("errors") or {}).values())
    return errors + (result.get("non_2xx_3xx", 0) if with_statuses else 0)


CLIENT_TABLE_HEAD = "| client | requests | statuses | errors | failed |\n|---|---:|---|---|---:|"


def client_row(name, result, with_statuses=True):
    """The report's table row of one client (see :data:`CLIENT_TABLE_HEAD`)."""
    if not result:
        return f"| {name} | (no report) | | | |"
    return (f"| {name} | {result.get('requests', 0):,} | {result.get('status', {})} | "
            f"{result.get('errors', {})} | {failed(result, with_statuses)} |")


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


def master_growth(what, fds_before, fds_after, rss_before, rss_after, failures):
    """The leak check of a master: its descriptors did not grow, its RSS (KiB) grew by less
    than 2 MiB (a reading that is None, the process gone, is not checked)."""
    if fds_after is not None and fds_before is not None and fds_after > fds_before:
        failures.append(f"{what} descriptors grew {fds_before} -> {fds_after}")
    if rss_after is not None and rss_before is not None and rss_after - rss_before > 2048:
        failures.append(f"{what} RSS grew {rss_before} -> {rss_after} KiB")


def stop_master(master, srv, known, failures, what="the master"):
    """TERM ``master`` and wait up to 20 s for it to exit (a failure if it does not); returns
    the processes of ``known`` ({pid: start time}) still alive half a second later, and hands
    ``known`` to ``srv``, whose ``stop()`` then kills any of them by PID."""
    os.kill(master, signal.SIGTERM)
    deadline = time.monotonic() + 20
    if master == srv.proc.pid:
        try:
            srv.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    while alive(master) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(master):
        failures.append(f"{what} did not stop within 20 s of TERM")
    time.sleep(0.5)
    survivors = [pid for pid, start in known.items() if alive(pid, start)]
    srv.known.update(known)  # srv.stop() kills anything left, by PID
    return survivors


def upgrade(master, pidfile, srv, remember, failures):
    """USR2 to ``master``, wait for the new master (``PIDFILE.2``) and its workers, TERM the
    old one and wait for it to exit; returns the master serving afterwards."""
    os.kill(master, signal.SIGUSR2)
    new_pidfile = pidfile + ".2"
    deadline = time.monotonic() + 20
    new_master = None
    while time.monotonic() < deadline:
        try:
            new_master = int(open(new_pidfile).read().strip())
            if workers_of(new_master):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    if new_master is None or not workers_of(new_master):
        failures.append("USR2: no new master with workers within 20 s")
        return master
    remember(master)
    remember(new_master)
    os.kill(master, signal.SIGTERM)
    if master == srv.proc.pid:
        try:
            if srv.proc.wait(20) != 0:
                failures.append(f"USR2: the old master exited with {srv.proc.returncode}")
        except subprocess.TimeoutExpired:
            failures.append("USR2: the old master did not exit within 20 s of TERM")
    return new_master


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--klass", default="sync", choices=["sync", "gthread", "gevent", "asgi"])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--duration", type=int, default=40, help="seconds of load (40)")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between events (2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="append the markdown report to this file")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    ws, run_tmp, env = chaos_workspace("ferrocorn-chaos-",
                                       ASGI_APP if args.klass == "asgi" else APP)
    upload = os.path.join(ws.tmp, "upload.bin")
    with open(upload, "wb") as f:
        f.write(os.urandom(UPLOAD_BYTES))

    port = compare.free_port()
    pidfile = os.path.join(ws.tmp, "master.pid")
    argv = ["ferrocorn", "-b", f"127.0.0.1:{port}", "-w", str(args.workers), "-k", args.klass,
            "--pid", pidfile,
            "--max-requests", "400", "--max-requests-jitter", "50", "--timeout", "3",
            "--graceful-timeout", "5", "chaos_app:app"]
    if args.klass == "gthread":
        argv[argv.index("chaos_app:app"):argv.index("chaos_app:app")] = ["--threads", "4"]
    srv = compare.Server(argv, env, ws.logdir, f"chaos-{args.klass}")
    events = []
    report = []
    failures = []
    try:
        srv.start()
        err = srv.wait_ready(port, 20)
        if err:
            raise SystemExit(f"server did not start: {err}")
        master = srv.proc.pid
        known = {}  # every process seen under a master: pid -> start time

        def remember(root):
            for pid, st in compare.tree(root).items():
                known[pid] = st[3]

        time.sleep(1.0)
        fds_before, rss_before = fd_count(master), compare.rss_kib(master)
        upgraded = False
        base = f"http://127.0.0.1:{port}"
        clients = [
            start_client("hello", base + "/", ["-c", str(HELLO_CONNECTIONS), "-t", "1"],
                         args.duration, env, ws.logdir),
            start_client("raises", base + "/raise", ["-c", "2", "--rate", "20"], args.duration, env,
                         ws.logdir),
            start_client("hangs", base + "/hang", ["-c", "2", "--rate", "0.25"], args.duration,
                         env, ws.logdir),
            start_client("uploads", base + "/upload",
                         ["-c", "2", "--rate", "4", "-m", "POST", "--body-file", upload],
                         args.duration, env, ws.logdir),
        ]
        cycle = ["kill", "hup", "ttin", "kill", "ttou"]
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < args.duration - args.every:
            time.sleep(args.every)
            remember(master)
            what = cycle[n % len(cycle)]
            if not upgraded and time.monotonic() - started >= args.duration / 2:
                what, upgraded = "usr2", True
            else:
                n += 1
            if what == "usr2":
                master = upgrade(master, pidfile, srv, remember, failures)
                events.append("USR2")
                time.sleep(1.0)
                fds_before, rss_before = fd_count(master), compare.rss_kib(master)
            elif what == "kill":
                pids = workers_of(master)
                if pids:
                    victim = rng.choice(pids)
                    os.kill(victim, signal.SIGKILL)
                    events.append(f"SIGKILL worker {victim}")
            else:
                os.kill(master, {"hup": signal.SIGHUP, "ttin": signal.SIGTTIN,
                                 "ttou": signal.SIGTTOU}[what])
                events.append(what.upper())
        results = {name: collect(c) for c, name in zip(clients, ["hello", "raises", "hangs", "uploads"])}
        time.sleep(1.0)
        remember(master)
        fds_after, rss_after = fd_count(master), compare.rss_kib(master)

        # Stop: TERM, then every process ever seen must be gone.
        survivors = stop_master(master, srv, known, failures)
        leftovers = sorted(os.listdir(run_tmp))

        with open(srv.err_path, errors="replace") as f:
            errlog = f.read()
        timeouts = errlog.count("WORKER TIMEOUT") + errlog.count("timed out after")
        kills = sum(1 for e in events if e.startswith("SIGKILL"))
        stops = sum(1 for e in events if e in ("HUP", "TTOU")) + args.workers * events.count("USR2")

        hello = results["hello"] or {}
        hello_failed = failed(hello)
        allowed = HELLO_CONNECTIONS * (kills + timeouts + stops)
        raises = results["raises"] or {}
        raises_status = raises.get("status", {})
        uploads = results["uploads"] or {}

        if hello_failed is None:
            failures.append("the hello client reported nothing")
        elif hello_failed > allowed:
            failures.append(f"hello: {hello_failed} failed requests, more than the {allowed} "
                            "that killed or stopped workers could have had in flight")
        bad_raises = {k: v for k, v in raises_status.items() if k != "500"}
        if bad_raises or sum((raises.get("errors") or {}).values()) > allowed:
            failures.append(f"raises: statuses {raises_status}, errors {raises.get('errors')}")
        if set(uploads.get("status", {})) - {"200"}:
            failures.append(f"uploads: statuses {uploads.get('status')}")
        master_growth("master", fds_before, fds_after, rss_before, rss_after, failures)
        if survivors:
            failures.append(f"processes outlived the master: {survivors}")
        if leftovers:
            failures.append(f"files left in TMPDIR: {leftovers[:10]}")

        report.append(f"### Chaos: `-k {args.klass} -w {args.workers}`, {args.duration} s, "
                      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        report.append("")
        report.append(f"- events ({len(events)}): {kills} SIGKILL, {events.count('HUP')} HUP, "
                      f"{events.count('TTIN')} TTIN, {events.count('TTOU')} TTOU, "
                      f"{events.count('USR2')} USR2 upgrade; workers the master "
                      f"killed or answered 504 for a timeout: {timeouts}; plus --max-requests 400 recycling")
        report.append("")
        report.append(CLIENT_TABLE_HEAD)
        for name in ["hello", "raises", "hangs", "uploads"]:
            report.append(client_row(name, results[name], with_statuses=name == "hello"))
        report.append("")
        report.append(f"- hello failures allowed (in flight in killed or stopped workers, "
                      f"{HELLO_CONNECTIONS} per event): {allowed}; failed: {hello_failed}")
        report.append(f"- master descriptors {fds_before} -> {fds_after}, RSS {rss_before} -> "
                      f"{rss_after} KiB; processes left after TERM: {len(survivors)}; files left "
                      f"in TMPDIR: {len(leftovers)}")
        report.append(f"- result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}")
    except KeyboardInterrupt:
        log("interrupted")
        failures.append("interrupted")
    finally:
        srv.stop()
        ws.close(args.keep_logs)
    compare.emit("\n".join(report), args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
