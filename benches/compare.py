#!/usr/bin/env python3
"""Compare ferrocorn with granian and gunicorn on small WSGI apps.

Usage (from the repository root)::

    python benches/compare.py [--duration 10] [--warmup 2] [--connections 64]
        [--threads 2] [--workers 1] [--apps hello,flask]
        [--servers ferrocorn,granian,gunicorn-sync,gunicorn-gthread]
        [--repeat 1] [--retry-noisy] [--out FILE.md]

For every (app, server) pair the script waits for an idle machine, starts the
server from ``benches/apps``, waits for HTTP 200, warms up with wrk, measures
with ``wrk --latency`` and samples CPU time of the server's whole process tree,
of wrk, and of the whole system (/proc/stat). Servers are stopped by PID only.
See benches/README.md for what the columns mean.

Pure standard library; Linux only (/proc).
"""

import argparse
import copy
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(HERE, "apps")
CLK_TCK = os.sysconf("SC_CLK_TCK")

APPS = {
    # name -> module in benches/apps
    "hello": "hello",
    "flask": "flask_app",
}

# Targets from the project's spine issue (2 workers each, same run).
TARGETS = {
    "hello": {"ratio": 1.7, "us_per_req": 8.0},
    "flask": {"ratio": 1.35, "us_per_req": None},
}

# --------------------------------------------------------------------------
# server definitions
# --------------------------------------------------------------------------


class Variant:
    """One row: a server + one configuration."""

    def __init__(self, key, server, config, argv_fn, baseline=None):
        self.key = key            # unique row id
        self.server = server      # server family name ("granian")
        self.config = config      # human-readable config
        self.argv_fn = argv_fn    # (port, workers, module) -> argv
        self.baseline = baseline  # "granian" / "gunicorn-sync" if reference row


def add_baseline_arg(ap):
    """``--baseline-ferrocorn``, for the scripts whose rows :func:`with_baseline` doubles."""
    ap.add_argument("--baseline-ferrocorn", metavar="PATH",
                    help="also run every ferrocorn row with this ferrocorn executable (another "
                         "build, e.g. from a venv), as row KEY@base: a same-run A/B of two builds")


def with_baseline(variants, baseline):
    """``variants`` plus, when ``baseline`` (a ferrocorn executable) is given, a twin of every
    ferrocorn row that runs it instead: the row ``KEY@base``, placed right after its twin."""
    if not baseline:
        return variants
    out = []
    for v in variants:
        out.append(v)
        if v.server == "ferrocorn":
            fn = v.argv_fn
            out.append(Variant(f"{v.key}@base", v.server, f"{v.config} [baseline build]",
                               lambda p, w, m, fn=fn: [baseline] + fn(p, w, m)[1:]))
    return out


def server_variants(name):
    """Return the list of rows for a --servers entry."""
    if name == "ferrocorn":
        return [Variant(
            "ferrocorn", "ferrocorn", "-w {w}",
            lambda p, w, m: ["ferrocorn", "-b", f"127.0.0.1:{p}", "-w", str(w), f"{m}:app"])]
    if name == "ferrocorn-gthread":
        return [Variant(
            "ferrocorn-gthread", "ferrocorn", "gthread -w {w} --threads 4",
            lambda p, w, m: ["ferrocorn", "-b", f"127.0.0.1:{p}", "-w", str(w), "-k", "gthread",
                             "--threads", "4", f"{m}:app"])]
    if name == "granian":
        base = lambda p, w, m: ["granian", "--interface", "wsgi", "--host", "127.0.0.1",
                                "--port", str(p), "--workers", str(w)]
        return [
            Variant("granian", "granian", "wsgi --workers {w}",
                    lambda p, w, m: base(p, w, m) + [f"{m}:app"], baseline="granian"),
            Variant("granian-bt1", "granian", "wsgi --workers {w} --blocking-threads 1",
                    lambda p, w, m: base(p, w, m) + ["--blocking-threads", "1", f"{m}:app"]),
        ]
    if name == "gunicorn-sync":
        return [Variant(
            "gunicorn-sync", "gunicorn", "sync -w {w}",
            lambda p, w, m: ["gunicorn", "-b", f"127.0.0.1:{p}", "-w", str(w), f"{m}:app"],
            baseline="gunicorn-sync")]
    if name == "gunicorn-gthread":
        return [Variant(
            "gunicorn-gthread", "gunicorn", "gthread -w {w} --threads 4",
            lambda p, w, m: ["gunicorn", "-b", f"127.0.0.1:{p}", "-w", str(w),
                             "-k", "gthread", "--threads", "4", f"{m}:app"])]
    if name == "hyper":
        # The floor: a bare Rust hyper hello server (no Python), same answer, {w} runtime threads.
        # Built from crates/bench/examples/hello_server.rs; the app module is ignored.
        binary = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release",
                              "examples", "hello_server")
        return [Variant(
            "hyper", "hyper", "bare hyper, {w} threads (no Python)",
            lambda p, w, m: [binary, str(p), "0", str(w)])]
    raise SystemExit(f"unknown server {name!r} (known: ferrocorn, granian, "
                     "gunicorn-sync, gunicorn-gthread, hyper, ferrocorn-gthread)")


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------


def read_proc_stat_pid(pid):
    """Return (ppid, utime+stime ticks, cutime+cstime ticks, starttime) or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(")") + 2:].split()
    # rest[0] = state (field 3); field N is rest[N - 3]
    try:
        ppid = int(rest[1])
        utime, stime = int(rest[11]), int(rest[12])
        cutime, cstime = int(rest[13]), int(rest[14])
        start = int(rest[19])
    except (IndexError, ValueError):
        return None
    return ppid, utime + stime, cutime + cstime, start


def all_procs():
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_proc_stat_pid(int(entry))
            if st is not None:
                procs[int(entry)] = st
    return procs


def tree(root):
    """Snapshot of root and all its descendants: {pid: (ppid, cpu, ccpu, start)}."""
    procs = all_procs()
    children = {}
    for pid, st in procs.items():
        children.setdefault(st[0], []).append(pid)
    out = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in procs and pid not in out:
            out[pid] = procs[pid]
            stack.extend(children.get(pid, ()))
    return out


def tree_cpu_delta(before, after):
    """CPU seconds used by the tree between two snapshots.

    For processes alive at both samples: delta of own time plus delta of
    reaped-children time (so workers that died and were reaped inside the window
    still count). Processes that appear only in the end sample (new children)
    count with their whole lifetime.
    """
    ticks = 0
    for pid, (_, cpu, ccpu, start) in after.items():
        b = before.get(pid)
        if b is not None and b[3] == start:
            ticks += (cpu - b[1]) + (ccpu - b[2])
        else:
            ticks += cpu + ccpu
    return ticks / CLK_TCK


def sys_cpu():
    """(busy, total) ticks from /proc/stat; steal counts as neither."""
    with open("/proc/stat") as f:
        line = f.readline()
    v = [int(x) for x in line.split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait + steal


def wait_for_idle(threshold_pct, timeout):
    """Wait until the machine is < threshold_pct busy over 1 s. Returns (ok, last%)."""
    deadline = time.monotonic() + timeout
    last = 100.0
    while True:
        b0, t0 = sys_cpu()
        time.sleep(1.0)
        b1, t1 = sys_cpu()
        last = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if last < threshold_pct:
            return True, last
        if time.monotonic() >= deadline:
            return False, last


# --------------------------------------------------------------------------
# server lifecycle
# --------------------------------------------------------------------------


def free_port(restartable=False):
    """A free loopback port. ``restartable``: one below the kernel's ephemeral range, for a
    server stopped and started again on it (while it is down, no outgoing connection on this
    host can be given that port as its local one and take it)."""
    if not restartable:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for candidate in random.sample(range(10000, max(10001, low)), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError("no free port below the ephemeral range")


def first_lines(path, n=5, width=300):
    try:
        with open(path, "r", errors="replace") as f:
            lines = [ln.rstrip() for ln in f if ln.strip()]
    except OSError:
        return ""
    # Prefer the last meaningful lines for tracebacks, first lines otherwise.
    if any(ln.startswith("Traceback") for ln in lines):
        lines = lines[-n:]
    else:
        lines = lines[:n]
    return " | ".join(ln[:width] for ln in lines)


class Server:
    def __init__(self, argv, env, logdir, tag):
        self.argv = argv
        self.env = env
        self.out_path = os.path.join(logdir, f"{tag}.out")
        self.err_path = os.path.join(logdir, f"{tag}.err")
        self.proc = None
        self.known = {}   # pid -> starttime, every descendant ever seen

    def start(self):
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, cwd=APPS_DIR, env=self.env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def remember(self, snap):
        for pid, st in snap.items():
            self.known[pid] = st[3]

    def snapshot(self):
        snap = tree(self.proc.pid)
        self.remember(snap)
        return snap

    def wait_ready(self, port, timeout):
        """Poll GET / until 200. Returns None if ready, else an error string."""
        deadline = time.monotonic() + timeout
        last = "no response"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as r:
                    r.read()
                    if r.status == 200:
                        return None
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except Exception as e:  # connection refused, timeout, ...
                last = type(e).__name__
            time.sleep(0.1)
        return f"no HTTP 200 within {timeout:.0f} s ({last})"

    def stop(self):
        """SIGTERM the main PID, wait up to 10 s, SIGKILL; then kill leftovers by PID."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.snapshot()
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        # Leftover descendants (reparented after the master died): kill each by PID,
        # checking the start time so a recycled PID is never hit.
        for pid, start in self.known.items():
            if pid == self.proc.pid:
                continue
            st = read_proc_stat_pid(pid)
            if st is not None and st[3] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Give the kernel a moment to release the port.
        time.sleep(0.2)


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else None


def parse_wrk(out):
    res = {"rps": None, "p50": None, "p99": None, "requests": None,
           "socket_errors": 0, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    if m:
        res["requests"] = int(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m:
            res[key] = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


def run_wrk(url, threads, conns, duration, latency, timeout_s=None, script=None):
    """Run wrk, return (stdout, cpu seconds used by wrk, returncode). ``timeout_s`` sets wrk's
    per-request ``--timeout`` (its default of 2 s is too short for apps that queue);
    ``script`` is a wrk Lua script (``-s``), e.g. one that POSTs a body."""
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s"]
    if timeout_s:
        argv.append(f"--timeout={timeout_s}s")
    if script:
        argv += ["-s", script]
    if latency:
        argv.append("--latency")
    argv.append(url)
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            p.wait()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return text, ru.ru_utime + ru.ru_stime, p.returncode


# --------------------------------------------------------------------------
# one measurement
# --------------------------------------------------------------------------


def proc_status_kib(pid, field):
    """A ``/proc/PID/status`` size field (``VmRSS``, ``VmHWM``) in KiB; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid):
    """The resident set (VmRSS) of ``pid`` in KiB; None if unreadable."""
    return proc_status_kib(pid, "VmRSS")


def peak_rss_kib(pids):
    """The largest peak resident set (VmHWM) among ``pids``, in KiB (None if none is readable)."""
    peaks = [p for p in (proc_status_kib(pid, "VmHWM") for pid in pids) if p is not None]
    return max(peaks, default=None)


def measure(variant, app, module, args, env, logdir, seq, workers=None, wrk_timeout=None,
            drain_s=0.0, wrk_script=None, check=None):
    """One row. ``workers`` overrides ``args.workers``; ``wrk_timeout`` is wrk's --timeout;
    ``drain_s`` is waited after the warm-up so requests it left queued are not served inside
    the measured window; ``wrk_script`` is passed to wrk as ``-s``; ``check(url)`` runs before
    the load and returns an error text when the server answers wrongly (the row is then
    "wrong answer", so a broken server cannot look fast). The row's ``peak_rss_mib`` is the
    largest peak memory of any process of the server after the run."""
    workers = workers or args.workers
    row = {"key": variant.key, "server": variant.server,
           "config": variant.config.format(w=workers), "status": "ok", "notes": []}

    idle_ok, busy = wait_for_idle(args.idle_threshold, args.idle_timeout)
    if not idle_ok:
        row["notes"].append(f"not idle ({busy:.0f}% busy)")
        log(f"  machine still {busy:.0f}% busy after {args.idle_timeout:.0f} s, going on")

    port = free_port()
    argv = variant.argv_fn(port, workers, module)
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        row["status"] = "failed to start"
        row["error"] = f"{argv[0]}: command not found"
        return row
    srv = Server(argv, env, logdir, f"{seq:03d}-{app}-w{workers}-{variant.key}")
    log(f"  $ {' '.join(argv)}")
    try:
        srv.start()
        err = srv.wait_ready(port, args.start_timeout)
        if err is not None:
            detail = first_lines(srv.err_path) or first_lines(srv.out_path)
            if (variant.server == "ferrocorn" and workers > 1 and
                    srv.proc.poll() is not None and
                    re.search(r"worker|-w\b|unsupported|not supported|not implemented|"
                              r"unrecognized|unexpected argument|no such option",
                              detail, re.I)):
                row["status"] = f"unsupported (-w {workers})"
            else:
                row["status"] = "failed to start"
            row["error"] = f"{err}; stderr: {detail}" if detail else err
            return row
        url = f"http://127.0.0.1:{port}/"
        wrong = check(url) if check else None
        if wrong:
            row["status"] = "wrong answer"
            row["error"] = wrong
            return row
        if args.warmup > 0:
            run_wrk(url, args.threads, args.connections, args.warmup, False, wrk_timeout,
                    wrk_script)
            time.sleep(drain_s)

        before = srv.snapshot()
        sb0, st0 = sys_cpu()
        t0 = time.monotonic()
        out, wrk_cpu, rc = run_wrk(url, args.threads, args.connections, args.duration, True,
                                   wrk_timeout, wrk_script)
        wall = time.monotonic() - t0
        sb1, st1 = sys_cpu()
        after = srv.snapshot()
        alive = srv.proc.poll() is None
        peak = peak_rss_kib(after)

        res = parse_wrk(out)
        if rc != 0 or res["rps"] is None:
            row["status"] = "wrk failed"
            row["error"] = " | ".join(out.strip().splitlines()[-3:])
            return row
        srv_cpu = tree_cpu_delta(before, after)
        sys_busy = (sb1 - sb0) / CLK_TCK
        other = sys_busy - srv_cpu - wrk_cpu
        reqs = res["requests"] or res["rps"] * wall
        row.update(
            rps=res["rps"], p50=res["p50"], p99=res["p99"],
            errors=res["socket_errors"] + res["non2xx"],
            srv_cpu_pct=100.0 * srv_cpu / wall,
            us_per_req=1e6 * srv_cpu / reqs if reqs else None,
            wrk_cpu_pct=100.0 * wrk_cpu / wall,
            other_pct=100.0 * other / wall,
            procs=len(after),
            peak_rss_mib=peak / 1024 if peak is not None else None,
        )
        if not alive:
            row["notes"].append("server exited during run")
        if row["other_pct"] > args.noisy_threshold:
            row["notes"].append("noisy")
        return row
    finally:
        srv.stop()


def add_run_args(ap, idle_timeout=60.0, keep_logs=True):
    """The options every bench script shares: the noise and idle checks, the start timeout,
    ``--out`` and (unless ``keep_logs`` is False) ``--keep-logs``."""
    ap.add_argument("--noisy-threshold", type=float, default=50.0,
                    help="other CPU, %% of one core, above which a run is noisy (50)")
    ap.add_argument("--idle-threshold", type=float, default=10.0,
                    help="machine busy %% (all CPUs) counted as idle (10)")
    ap.add_argument("--idle-timeout", type=float, default=idle_timeout,
                    help=f"max seconds to wait for idle before going on ({idle_timeout:g})")
    ap.add_argument("--start-timeout", type=float, default=15.0,
                    help="max seconds to wait for HTTP 200 (15)")
    ap.add_argument("--out", help="append the markdown report to this file")
    if keep_logs:
        ap.add_argument("--keep-logs", action="store_true", help="keep server stdout/stderr")


def require_wrk():
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found on PATH")


class Workspace:
    """A bench run's scratch directory: the servers' XDG runtime dir (their control sockets
    never touch the user's), their logs, and the environment to start them with. Creating it
    also turns SIGTERM into KeyboardInterrupt, so the scripts' ``finally`` blocks stop the
    server that is running."""

    def __init__(self, prefix, **extra_env):
        def on_term(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, on_term)
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.logdir = os.path.join(self.tmp, "logs")
        runtime_dir = os.path.join(self.tmp, "xdg")
        os.makedirs(runtime_dir, mode=0o700)
        os.makedirs(self.logdir)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir, PYTHONDONTWRITEBYTECODE="1",
                        PYTHONUNBUFFERED="1", **extra_env)
        self.env.pop("PYTHONPATH", None)

    def close(self, keep_logs=False):
        if keep_logs:
            log(f"server logs kept in {self.logdir}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def emit(report, out):
    """Print the report and append it to ``out`` (a path) when given."""
    print(report)
    if out:
        with open(out, "a") as f:
            f.write(report + "\n")


def hello_server_path(explicit=None):
    """The bare hyper hello (``crates/bench/examples/hello_server.rs``): ``explicit`` when given
    (a ``--hello-server PATH``), else the release build, built once if it is missing."""
    return bench_example_path("hello_server", explicit, "--hello-server")


def bench_example_path(name, explicit=None, option=None):
    """A program of ``crates/bench/examples`` (``hello_server``, ``relay_floor``): ``explicit``
    when given (its ``option PATH``), else the release build, built once if it is missing."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise SystemExit(f"{option} {explicit}: not an executable")
        return os.path.abspath(explicit)
    root = os.path.dirname(HERE)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    path = os.path.join(target, "release", "examples", name)
    if not os.access(path, os.X_OK):
        cmd = ["cargo", "build", "--release", "--example", name, "-p", "ferrocorn-bench"]
        log(f"{path} missing: building it once ($ {' '.join(cmd)})")
        if shutil.which("cargo") is None:
            raise SystemExit(f"cargo not found on PATH: build {name} first"
                             + (f", or give {option} PATH" if option else ""))
        subprocess.run(cmd, cwd=root, check=True, stdin=subprocess.DEVNULL, timeout=1800)
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} still missing after the build")
    return path


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def log_row(row):
    """The progress line for one measured row: its numbers, or why it has none."""
    if row["status"] == "ok":
        log(f"  {row['rps']:,.0f} RPS, p50 {fmt(row['p50'], '.2f')} ms, p99 {fmt(row['p99'], '.2f')} ms, "
            f"{fmt(row['us_per_req'], '.1f')} µs/req, other {row['other_pct']:.0f}% "
            f"{' '.join(row['notes'])}".rstrip())
    else:
        log(f"  {row['status']}: {row.get('error', '')}")


def round_order(variants, rnd):
    """The rows in the order of round ``rnd``: reversed on odd rounds, so no server is always
    measured first (or last) on a machine whose speed drifts."""
    return list(variants) if rnd % 2 == 0 else list(reversed(variants))


def add_load_args(ap, connections, duration=6, warmup=1, rounds=2):
    """The load options of a bench script with one row per server: wrk connections and
    threads, measured and warm-up seconds, rounds, workers per server."""
    ap.add_argument("--connections", type=int, default=connections,
                    help=f"wrk connections ({connections})")
    ap.add_argument("--duration", type=int, default=duration, help=f"measured wrk seconds ({duration})")
    ap.add_argument("--warmup", type=int, default=warmup, help=f"discarded warm-up seconds ({warmup})")
    ap.add_argument("--rounds", type=int, default=rounds, help=f"rounds; median per row ({rounds})")
    ap.add_argument("--workers", type=int, default=2, help="workers per server (2)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")


def run_rounds(variants, rounds, measure_one, ws, keep_logs):
    """Measure every variant once per round (order alternating), logging each row, then close
    the workspace; returns the median row per variant, in the variants' order. ``measure_one(
    variant, seq)`` returns a row. An interrupt (Ctrl-C, TERM) reports what was measured."""
    rows_by_key = {}
    seq = 0
    try:
        for rnd in range(rounds):
            for v in round_order(variants, rnd):
                seq += 1
                log(f"[round {rnd + 1}/{rounds}] {v.key}")
                row = measure_one(v, seq)
                log_row(row)
                rows_by_key.setdefault(v.key, []).append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(keep_logs)
    return [merge_rounds(rows_by_key[v.key]) for v in variants if v.key in rows_by_key]


def failed_row(row, blank_cells):
    """The markdown table row of a server that has no numbers: its status in bold, then
    ``blank_cells`` empty cells, then the error."""
    note = (row.get("error") or "").replace("|", "/").replace("\n", " ")
    return (f"| {row['server']} | {row['config']} | **{row['status']}** |"
            + " |" * blank_cells + f" {note[:400]} |")


def titled_header(args, title):
    """The run header of a script with ``--rounds``, titled ``## ferrocorn TITLE benchmark``."""
    hargs = copy.copy(args)
    hargs.repeat = args.rounds
    return header(hargs).replace("## ferrocorn benchmark", f"## ferrocorn {title} benchmark")


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def cmd_version(argv, any_exit=False):
    """First output line of `argv` (e.g. `granian --version`)."""
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not available ({type(e).__name__})"
    text = (p.stdout or p.stderr).strip().splitlines()
    if not text or (p.returncode != 0 and not any_exit):
        return f"not available (exit {p.returncode})"
    return text[0].strip()


def pkg_version(name):
    try:
        from importlib.metadata import version, PackageNotFoundError
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"
    except ImportError:
        return "?"


def header(args):
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"## ferrocorn benchmark, {now}",
        "",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{model}, kernel {platform.release()}",
        f"- python: {platform.python_version()} ({sys.executable})",
        f"- ferrocorn: {cmd_version(['ferrocorn', '--version'])}; "
        f"granian: {cmd_version(['granian', '--version'])}; "
        f"gunicorn: {cmd_version(['gunicorn', '--version'])}; "
        f"flask: {pkg_version('flask')}; wrk: {cmd_version(['wrk', '--version'], any_exit=True)}",
        f"- load: `wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency` "
        f"after a {args.warmup} s warm-up; {args.workers} worker(s) per server; "
        f"{args.repeat} round(s)" + (" (median per row, server order alternating)"
                                     if args.repeat > 1 else ""),
    ]
    return "\n".join(lines)


def fmt(v, spec, suffix=""):
    return "—" if v is None else format(v, spec) + suffix


OPEN_LOOP_FIELDS = ("open_rps", "open_p50", "open_p99", "open_p999")


def add_open_loop_args(ap, rate=30000):
    ap.add_argument("--open-rate", type=int, default=rate,
                    help=f"req/s of the open-loop latency pass, the same for every row; 0: skip ({rate})")
    ap.add_argument("--open-duration", type=int, default=6, help="its seconds (6)")


def run_open_loop(url, args):
    """Latency at ``args.open_rate`` req/s over ``args.connections`` connections
    (``ferrocorn bench --rate``: counted from each request's intended send time, so the same
    offered load for every server), as row fields ``open_p50``/``open_p99``/``open_p999`` (ms)
    and ``open_rps``; ``open_error`` when the client failed."""
    argv = ["ferrocorn", "bench", "--json", "--rate", str(args.open_rate), "-c",
            str(args.connections), "-t", str(args.threads), "-d", f"{args.open_duration}s",
            "--warmup", "1s", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.open_duration + 60)
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"open_error": (done.stderr or done.stdout).strip()[-200:]}
    lat = report["latency_us"]
    return {"open_rps": report["rps"], "open_p50": lat["p50"] / 1000,
            "open_p99": lat["p99"] / 1000, "open_p999": lat["p999"] / 1000}


def merge_rounds(rows):
    """Median of each numeric column over the successful rounds of one row."""
    ok = [r for r in rows if r["status"] == "ok"]
    base = dict(rows[0])
    if not ok:
        return base
    base = dict(ok[0])
    for k in ("rps", "p50", "p99", "srv_cpu_pct", "us_per_req", "wrk_cpu_pct", "other_pct",
              "peak_rss_mib", *OPEN_LOOP_FIELDS):
        vals = [r[k] for r in ok if r.get(k) is not None]
        base[k] = statistics.median(vals) if vals else None
    base["errors"] = sum(r["errors"] for r in ok)
    base["rps_rounds"] = [r["rps"] for r in ok]
    notes = []
    for r in rows:
        for n in r["notes"]:
            if n not in notes:
                notes.append(n)
    if len(ok) < len(rows):
        bad = sorted({r["status"] + (": " + r["error"][:80] if r.get("error") else "")
                      for r in rows if r["status"] != "ok"})
        notes.append(f"{len(ok)}/{len(rows)} rounds ok (others: {'; '.join(bad)})")
    if len(rows) > 1:
        notes.append("RPS " + "/".join(f"{r['rps']:,.0f}" for r in ok))
    base["notes"] = notes
    return base


def table(app, rows):
    ref_granian = next((r for r in rows if r["key"] == "granian" and r["status"] == "ok"), None)
    ref_sync = next((r for r in rows if r["key"] == "gunicorn-sync" and r["status"] == "ok"), None)
    out = [f"### {app}", "",
           "| server | config | RPS | p50 ms | p99 ms | errors | server µs CPU/req "
           "| server CPU | wrk CPU | other CPU | vs granian | vs gunicorn sync | notes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(failed_row(r, 9))
            continue
        rg = r["rps"] / ref_granian["rps"] if ref_granian else None
        rs = r["rps"] / ref_sync["rps"] if ref_sync else None
        out.append(
            f"| {r['server']} | {r['config']} | {r['rps']:,.0f} | {fmt(r['p50'], '.2f')} "
            f"| {fmt(r['p99'], '.2f')} | {r['errors']} | {fmt(r['us_per_req'], '.1f')} "
            f"| {fmt(r['srv_cpu_pct'], '.0f', '%')} | {fmt(r['wrk_cpu_pct'], '.0f', '%')} "
            f"| {fmt(r['other_pct'], '.0f', '%')} | {fmt(rg, '.2f', '×')} "
            f"| {fmt(rs, '.2f', '×')} | {'; '.join(r['notes'])} |")
    return "\n".join(out)


def summary(app, rows, workers):
    fc = next((r for r in rows if r["key"] == "ferrocorn"), None)
    gr = next((r for r in rows if r["key"] == "granian"), None)
    tgt = TARGETS.get(app, {})
    if fc is None:
        return f"- {app}: ferrocorn not in this run"
    if fc["status"] != "ok":
        return f"- {app}: ferrocorn {fc['status']}"
    parts = []
    if gr is not None and gr["status"] == "ok":
        ratio = fc["rps"] / gr["rps"]
        t = tgt.get("ratio")
        verdict = "" if t is None else (f" (target ≥ {t}×: "
                                        f"{'met' if ratio >= t else 'NOT met'})")
        parts.append(f"ferrocorn/granian RPS ratio {ratio:.2f}×{verdict}")
    else:
        parts.append("ferrocorn/granian RPS ratio n/a (granian default row missing)")
    us = fc["us_per_req"]
    t = tgt.get("us_per_req")
    verdict = "" if t is None or us is None else (f" (target ≤ {t:g} µs: "
                                                  f"{'met' if us <= t else 'NOT met'})")
    parts.append(f"ferrocorn µs/req {fmt(us, '.1f')}{verdict}")
    line = f"- {app}: " + ", ".join(parts)
    if workers != 2:
        line += f" [targets are defined for 2 workers each; this run used {workers}]"
    return line


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="measurement seconds (10)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up seconds (2)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--workers", type=int, default=1, help="workers per server")
    ap.add_argument("--apps", default="hello,flask")
    ap.add_argument("--servers", default="ferrocorn,granian,gunicorn-sync,gunicorn-gthread")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; median per row")
    ap.add_argument("--retry-noisy", action="store_true",
                    help="rerun a row once if other CPU > --noisy-threshold")
    add_run_args(ap)
    add_baseline_arg(ap)
    args = ap.parse_args()

    require_wrk()
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    for a in apps:
        if a not in APPS:
            raise SystemExit(f"unknown app {a!r} (known: {', '.join(APPS)})")
    variants = []
    for s in args.servers.split(","):
        if s.strip():
            variants.extend(server_variants(s.strip()))
    variants = with_baseline(variants, args.baseline_ferrocorn)

    ws = Workspace("ferrocorn-bench-")
    env, logdir = ws.env, ws.logdir

    head = header(args)
    log(head)
    results = {a: {v.key: [] for v in variants} for a in apps}
    seq = 0
    try:
        for rnd in range(args.repeat):
            order = round_order(variants, rnd)
            for app in apps:
                for v in order:
                    seq += 1
                    log(f"[round {rnd + 1}/{args.repeat}] {app} / {v.key}")
                    row = measure(v, app, APPS[app], args, env, logdir, seq)
                    if (args.retry_noisy and row["status"] == "ok"
                            and "noisy" in row["notes"]):
                        log(f"  noisy (other CPU {row['other_pct']:.0f}%), retrying once")
                        seq += 1
                        retry = measure(v, app, APPS[app], args, env, logdir, seq)
                        # Keep the less contaminated of the two attempts.
                        if retry["status"] == "ok" and retry["other_pct"] < row["other_pct"]:
                            retry["notes"].append(
                                f"retried (first: {row['rps']:,.0f} RPS, "
                                f"other {row['other_pct']:.0f}%)")
                            row = retry
                        else:
                            other = (f"{retry['other_pct']:.0f}% other" if retry["status"] == "ok"
                                     else retry["status"])
                            row["notes"].append(f"retry no cleaner ({other})")
                    log_row(row)
                    results[app][v.key].append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    parts = [head, ""]
    summaries = []
    for app in apps:
        rows = [merge_rounds(results[app][v.key]) for v in variants if results[app][v.key]]
        if not rows:
            continue
        parts += [table(app, rows), ""]
        summaries.append(summary(app, rows, args.workers))
    if summaries:
        parts += ["Summary:", ""] + summaries + [""]
    report = "\n".join(parts)
    emit(report, args.out)


if __name__ == "__main__":
    main()
