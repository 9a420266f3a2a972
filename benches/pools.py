#!/usr/bin/env python3
"""Worker pools by URL (``--pool``): what a pool costs the paths it does not own, and what the
inside hop costs the paths it does. One run.

Usage (from the repository root)::

    python benches/pools.py [--duration 10] [--warmup 2] [--repeat 1] [--workers 2]
        [--pool-workers 2] [--ferrocorn CMD] [--out FILE.md]

The app (written by the script into a temp dir, every server's cwd) is a 13-byte WSGI hello
with two callables that answer bodies of the same length: ``hello:site`` answers
``Hello, Site!!`` and ``hello:reports`` answers ``Hello, Rept!!``, so every row proves which
app served it. Rows, each loaded with ``wrk -t2 -c64 --latency`` after a warm-up:

1. ``plain`` — ``ferrocorn -w 2 -k sync hello:site`` (no pools), wrk on ``/``.
2. ``pools, / path`` — the same two ``/`` workers plus ``--pool '/reports/ app=hello:reports
   worker_class=sync workers=2'``, wrk on ``/``: served by the ``/`` pool's workers directly.
   The issue's target: RPS ≥ 0.95× ``plain``.
3. ``pools, forwarded path`` — the same server (the same process, right after row 2), wrk on
   ``/reports/x``: every request is forwarded by a ``/`` worker over its keep-alive unix-socket
   connections to a ``/reports/`` worker. Its RPS and CPU per request against ``plain`` are
   the price of routing by forwarding.
4. ``separate instance`` — ``ferrocorn -w 2 -k sync hello:reports`` on its own, wrk on
   ``/reports/x``: the reports app without the hop (what a second instance behind a front
   proxy would cost, minus the proxy). Row 3 ÷ row 4 is the hop's price.

Before each row's load, three GETs of the row's path on one keep-alive connection must answer
200 with the expected body, else the row is **wrong answer** and the run goes on.

Columns: RPS, ratio against ``plain``, p50/p99, non-2xx and socket errors, the server's CPU
per request (its whole process tree: the master and every worker of every pool), that CPU
split into the master, the ``/`` pool's workers and the ``/reports/`` pool's workers (a worker
belongs to ``/reports/`` when its ``/proc/PID/cmdline`` — its process title — contains
`` pool /reports/``), wrk's CPU and other CPU (as in ``compare.py``). Row 3's ``/reports/``
share must be > 0 (the pool received the traffic) and row 2's must be ~0 (it did not). The
servers' stderr is scanned for error and warning lines, counted in the notes.

Two columns check that all the load's connections were served: "conns in flight" is RPS ×
wrk's mean latency (Little's law; near ``-c`` when every connection keeps a request going, far
below it when most connections wait unserved, which wrk reports neither as errors nor in its
latencies), and a mid-window sample of the established connections to the public port: how
many each of the server's processes holds (its fds against ``/proc/net/tcp``) and how many no
process holds yet (inode 0: still in the listen queue, unaccepted). Either one flags the row.

The idle wait, start and stop by PID, /proc CPU accounting, wrk running and parsing, and the
header are ``compare.py``'s. Every ferrocorn runs with ``--no-control-socket``. Loopback only;
standard library only; Linux only.
"""

import argparse
import http.client
import os
import re
import shlex
import statistics
import sys
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

log = compare.log
fmt = compare.fmt

MODULE = "hello"
SITE_BODY = b"Hello, Site!!"
REPORTS_BODY = b"Hello, Rept!!"
PREFIX = "/reports/"
REPORTS_PATH = "/reports/x"
POOL_MARK = f" pool {PREFIX}"
TARGET_SITE_RATIO = 0.95   # issue 18: the / path with pools ≥ 0.95× no pools, same run

APP_SOURCE = '''
    """13-byte WSGI hellos for benches/pools.py (written by the script): ``site`` for the /
    pool, ``reports`` for the /reports/ pool; same length, different bodies."""


    def _hello(body):
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]

        def app(environ, start_response):
            start_response("200 OK", headers)
            return [body]
        return app


    site = _hello(b"Hello, Site!!")
    reports = _hello(b"Hello, Rept!!")
    '''

assert len(SITE_BODY) == len(REPORTS_BODY) == 13


# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------


class Row:
    """One measured row: which server configuration, which path, which body must answer."""

    def __init__(self, key, name, path, body):
        self.key = key
        self.name = name
        self.path = path
        self.body = body


ROWS = {
    "plain": Row("plain", "plain", "/", SITE_BODY),
    "pools-site": Row("pools-site", "pools, / path", "/", SITE_BODY),
    "pools-fwd": Row("pools-fwd", "pools, forwarded path", REPORTS_PATH, REPORTS_BODY),
    "separate": Row("separate", "separate instance", REPORTS_PATH, REPORTS_BODY),
}
ORDER = ["plain", "pools-site", "pools-fwd", "separate"]


class Config:
    """One server start, measured on one or more rows (the pools server serves rows 2 and 3)."""

    def __init__(self, key, describe, argv_fn, rows):
        self.key = key
        self.describe = describe   # the command line as shown in the report
        self.argv_fn = argv_fn     # port -> argv
        self.rows = rows           # row keys measured on this server, in order


def configs(args):
    fc = shlex.split(args.ferrocorn)
    w = str(args.workers)
    pool = f"{PREFIX} app={MODULE}:reports worker_class=sync workers={args.pool_workers}"

    def base(port, app):
        return fc + ["-b", f"127.0.0.1:{port}", "-w", w, "-k", "sync", "--no-control-socket", app]

    return [
        Config("plain", f"ferrocorn -w {w} -k sync {MODULE}:site",
               lambda p: base(p, f"{MODULE}:site"), ["plain"]),
        Config("pools", f"ferrocorn -w {w} -k sync --pool '{pool}' {MODULE}:site",
               lambda p: base(p, f"{MODULE}:site")[:-1] + ["--pool", pool, f"{MODULE}:site"],
               ["pools-site", "pools-fwd"]),
        Config("separate", f"ferrocorn -w {w} -k sync {MODULE}:reports",
               lambda p: base(p, f"{MODULE}:reports"), ["separate"]),
    ]


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


def check_answer(port, path, body, n=3):
    """None when ``n`` GETs of ``path`` on one keep-alive connection answer 200 ``body``;
    else the error text."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for i in range(n):
            conn.request("GET", path)
            r = conn.getresponse()
            got = r.read()
            if r.status != 200 or got != body:
                return (f"GET {path} #{i + 1}: HTTP {r.status}, body {got[:60]!r} "
                        f"(expected 200 {body!r})")
        return None
    except (OSError, http.client.HTTPException) as e:
        return f"GET {path}: {type(e).__name__}: {e}"
    finally:
        conn.close()


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def classify(root, snaps):
    """{pid: "master" | "/" | PREFIX} for every pid seen in ``snaps`` (process titles)."""
    out = {}
    for snap in snaps:
        for pid in snap:
            if pid in out:
                continue
            if pid == root:
                out[pid] = "master"
            else:
                out[pid] = PREFIX if POOL_MARK in cmdline(pid) else "/"
    return out


def group_cpu(before, after, groups):
    """CPU seconds per group between two tree snapshots (as compare.tree_cpu_delta)."""
    out = {"master": 0.0, "/": 0.0, PREFIX: 0.0}
    for pid, st in after.items():
        out[groups.get(pid, "/")] += compare.tree_cpu_delta(
            {pid: before[pid]} if pid in before else {}, {pid: st})
    return out


def pool_pids(root):
    """Live workers per pool, by process title."""
    snap = compare.tree(root)
    groups = classify(root, [snap])
    return {g: sorted(p for p, gg in groups.items() if gg == g) for g in ("/", PREFIX)}


def held_connections(root, port):
    """The server side of the established TCP connections to ``port``: how many each worker
    holds (by its open fds) and how many no process holds (still in the accept queue)."""
    inodes = set()
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        total += 1
                        # A connection not accepted yet has no file, hence inode 0.
                        if fields[9] != "0":
                            inodes.add(fields[9])
        except OSError:
            pass
    held = {}
    for pid in compare.tree(root):
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    n += 1
        except OSError:
            continue
        if n:
            held[pid] = n
    return held, total - sum(held.values())


class Sampler(threading.Thread):
    """Samples :func:`held_connections` once, ``delay`` seconds in (mid-window)."""

    def __init__(self, root, port, delay):
        super().__init__(daemon=True)
        self.root, self.port, self.delay = root, port, delay
        self.result = None

    def run(self):
        time.sleep(self.delay)
        try:
            self.result = held_connections(self.root, self.port)
        except Exception as e:  # a sample is context, never a reason to fail the row
            log(f"  connection sample failed: {e}")


LOG_PROBLEM = re.compile(r"\[(ERROR|CRITICAL|WARNING)\]|\b(error|panic|panicked|traceback)\b",
                         re.I)


def log_problems(srv):
    """Error/warning lines in a server's stderr and stdout: (count, first one)."""
    lines = []
    for path in (srv.err_path, srv.out_path):
        try:
            with open(path, errors="replace") as f:
                lines += [ln.strip() for ln in f if LOG_PROBLEM.search(ln)]
        except OSError:
            pass
    return len(lines), (lines[0][:200] if lines else "")


def new_row(row, cfg):
    return {"key": row.key, "server": row.name, "config": f"`{cfg.describe}`, wrk on `{row.path}`",
            "status": "ok", "notes": []}


def measure_row(row, cfg, srv, port, args):
    """Check the answer, warm up and measure one row on a running server."""
    out = new_row(row, cfg)
    idle_ok, busy = compare.wait_for_idle(args.idle_threshold, args.idle_timeout)
    if not idle_ok:
        out["notes"].append(f"not idle ({busy:.0f}% busy)")
        log(f"  machine still {busy:.0f}% busy after {args.idle_timeout:.0f} s, going on")
    wrong = check_answer(port, row.path, row.body)
    if wrong:
        out.update(status="wrong answer", error=wrong)
        log(f"  !!! {row.key}: WRONG ANSWER: {wrong}")
        return out
    url = f"http://127.0.0.1:{port}{row.path}"
    log(f"  {row.name}: wrk on {row.path}")
    if args.warmup > 0:
        compare.run_wrk(url, args.threads, args.connections, args.warmup, False)

    before = srv.snapshot()
    sb0, _ = compare.sys_cpu()
    sampler = Sampler(srv.proc.pid, port, args.duration / 2)
    t0 = time.monotonic()
    sampler.start()
    text, wrk_cpu, rc = compare.run_wrk(url, args.threads, args.connections, args.duration, True)
    sampler.join()
    wall = time.monotonic() - t0
    sb1, _ = compare.sys_cpu()
    after = srv.snapshot()
    alive = srv.proc.poll() is None

    res = compare.parse_wrk(text)
    if rc != 0 or res["rps"] is None:
        out.update(status="wrk failed", error=" | ".join(text.strip().splitlines()[-3:]))
        return out
    m = re.search(r"^\s*Latency\s+(\S+)", text, re.M)
    avg_ms = compare._ms(m.group(1)) if m else None
    groups = classify(srv.proc.pid, [after, before])
    per_group = group_cpu(before, after, groups)
    srv_cpu = compare.tree_cpu_delta(before, after)
    other = (sb1 - sb0) / compare.CLK_TCK - srv_cpu - wrk_cpu
    reqs = res["requests"] or res["rps"] * wall
    out.update(
        rps=res["rps"], p50=res["p50"], p99=res["p99"], requests=reqs,
        errors=res["socket_errors"] + res["non2xx"],
        non2xx=res["non2xx"], socket_errors=res["socket_errors"],
        srv_cpu_pct=100.0 * srv_cpu / wall,
        us_per_req=1e6 * srv_cpu / reqs if reqs else None,
        us_master=1e6 * per_group["master"] / reqs if reqs else None,
        us_site=1e6 * per_group["/"] / reqs if reqs else None,
        us_reports=1e6 * per_group[PREFIX] / reqs if reqs else None,
        reports_workers=sum(1 for p, g in groups.items() if g == PREFIX and p in after),
        site_workers=sum(1 for p, g in groups.items() if g == "/" and p in after),
        # Little's law: connections with a request in flight, on average. Well below -c means
        # connections waited unserved (e.g. left in the accept queue) for the whole window.
        in_flight=res["rps"] * avg_ms / 1000.0 if avg_ms is not None else None,
        wrk_cpu_pct=100.0 * wrk_cpu / wall,
        other_pct=100.0 * other / wall,
    )
    if sampler.result is not None:
        held, queued = sampler.result
        out["held"] = "+".join(str(held[p]) for p in sorted(held)) or "0"
        out["queued"] = queued
        if queued > 0:
            out["notes"].append(f"**mid-window, {queued} connections sat unaccepted in the "
                                "listen queue**")
    if out["in_flight"] is not None and out["in_flight"] < 0.5 * args.connections:
        out["notes"].append(f"**only ~{out['in_flight']:.0f} of {args.connections} connections "
                            "in flight (RPS × mean latency): the rest were not served**")
    # After the window, the same path must still answer with the right app.
    wrong = check_answer(port, row.path, row.body, n=1)
    if wrong:
        out["notes"].append(f"**wrong answer after the load: {wrong}**")
    if out["errors"]:
        out["notes"].append(f"**{res['non2xx']} non-2xx, {res['socket_errors']} socket errors**")
    if not alive:
        out["notes"].append("**server exited during run**")
    if out["other_pct"] > args.noisy_threshold:
        out["notes"].append("noisy")
    return out


def measure_config(cfg, args, ws, seq, row_order):
    """Start one server, measure its rows (in ``row_order``), stop it. Returns the rows."""
    rows = [ROWS[k] for k in row_order]
    port = compare.free_port()
    argv = cfg.argv_fn(port)
    tag = f"{seq:03d}-{cfg.key}"
    srv = compare.Server(argv, ws.env, ws.logdir, tag)
    log(f"  $ {shlex.join(argv)}")
    out = []
    try:
        srv.start()
        err = srv.wait_ready(port, args.start_timeout)
        if err is not None:
            detail = compare.first_lines(srv.err_path) or compare.first_lines(srv.out_path)
            status = "failed to start"
            if re.search(r"--pool|unknown option|unrecognized|unexpected argument|no such option",
                         detail):
                status = "unsupported (--pool)"
            for r in rows:
                o = new_row(r, cfg)
                o.update(status=status, error=f"{err}; stderr: {detail}" if detail else err)
                out.append(o)
            return out
        if cfg.key == "pools":
            # Every pool's workers up (by title) before the load.
            deadline = time.monotonic() + args.start_timeout
            while time.monotonic() < deadline:
                pp = pool_pids(srv.proc.pid)
                if len(pp["/"]) >= args.workers and len(pp[PREFIX]) >= args.pool_workers:
                    break
                time.sleep(0.1)
            log(f"  workers: / {pp['/']}, {PREFIX} {pp[PREFIX]}")
        for r in rows:
            row = measure_row(r, cfg, srv, port, args)
            compare.log_row(row)
            if row["status"] == "ok":
                log(f"  CPU split µs/req: master {fmt(row['us_master'], '.2f')}, / "
                    f"{fmt(row['us_site'], '.2f')}, {PREFIX} {fmt(row['us_reports'], '.2f')}")
            out.append(row)
        n, first = log_problems(srv)
        if n:
            for row in out:
                row["notes"].append(f"{n} error/warning log lines in the server's run "
                                    f"(first: {first})")
        return out
    finally:
        srv.stop()


def merge(rows):
    """compare.merge_rounds plus this script's columns (medians)."""
    base = compare.merge_rounds(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    for k in ("us_master", "us_site", "us_reports", "requests", "in_flight"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        base[k] = statistics.median(vals) if vals else None
    base["non2xx"] = sum(r.get("non2xx", 0) for r in ok)
    base["socket_errors"] = sum(r.get("socket_errors", 0) for r in ok)
    return base


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def ok_row(rows, key):
    return next((r for r in rows if r["key"] == key and r["status"] == "ok"), None)


def ratio(a, b):
    return a / b if a and b else None


def table(rows):
    plain = ok_row(rows, "plain")
    out = ["| # | row | server, load | RPS | ÷ plain | p50 ms | p99 ms | non-2xx / socket errors "
           "| conns in flight | conns held per worker / unaccepted (mid-window) | server µs CPU/req | CPU split µs/req: master / `/` pool / `/reports/` pool "
           "| server CPU | wrk CPU | other CPU | notes |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(rows):
        num = ORDER.index(r["key"]) + 1
        if r["status"] != "ok":
            out.append(f"| {num} " + compare.failed_row(r, 11))
            continue
        rp = ratio(r["rps"], plain and plain["rps"])
        split = (f"{fmt(r['us_master'], '.2f')} / {fmt(r['us_site'], '.2f')} / "
                 f"{fmt(r['us_reports'], '.2f')}")
        out.append(
            f"| {num} | {r['server']} | {r['config']} | {r['rps']:,.0f} | {fmt(rp, '.2f', '×')} "
            f"| {fmt(r['p50'], '.2f')} | {fmt(r['p99'], '.2f')} "
            f"| {r['non2xx']} / {r['socket_errors']} | {fmt(r['in_flight'], '.0f')} "
            f"| {r.get('held', '—')} / {fmt(r.get('queued'), 'd')} "
            f"| {fmt(r['us_per_req'], '.1f')} "
            f"| {split} | {fmt(r['srv_cpu_pct'], '.0f', '%')} "
            f"| {fmt(r['wrk_cpu_pct'], '.0f', '%')} | {fmt(r['other_pct'], '.0f', '%')} "
            f"| {'; '.join(r['notes'])} |")
    return "\n".join(out)


def verdict(met):
    return "MET" if met else "**NOT MET**"


def summary(rows):
    plain, site = ok_row(rows, "plain"), ok_row(rows, "pools-site")
    fwd, sep = ok_row(rows, "pools-fwd"), ok_row(rows, "separate")
    lines = []
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"- row {r['server']}: **{r['status']}** ({(r.get('error') or '')[:200]})")

    if plain and site:
        x = site["rps"] / plain["rps"]
        lines.append(f"- `/` path with a pool configured ≥ {TARGET_SITE_RATIO}× plain: {x:.2f}× "
                     f"({site['rps']:,.0f} vs {plain['rps']:,.0f} RPS; CPU "
                     f"{fmt(site['us_per_req'], '.1f')} vs {fmt(plain['us_per_req'], '.1f')} "
                     f"µs/req) — {verdict(x >= TARGET_SITE_RATIO)}")
    else:
        lines.append(f"- `/` path with a pool configured ≥ {TARGET_SITE_RATIO}× plain: n/a "
                     "(a row is missing or failed)")

    if plain and fwd:
        c = ratio(fwd["us_per_req"], plain["us_per_req"])
        lines.append(f"- forwarded path against plain: RPS {fwd['rps'] / plain['rps']:.2f}× "
                     f"({fwd['rps']:,.0f} vs {plain['rps']:,.0f}); server CPU per request "
                     f"{fmt(c, '.2f', '×')} ({fmt(fwd['us_per_req'], '.1f')} vs "
                     f"{fmt(plain['us_per_req'], '.1f')} µs/req, "
                     f"+{fmt(fwd['us_per_req'] - plain['us_per_req'], '.1f')} µs per request)")
    if fwd and sep:
        c = ratio(fwd["us_per_req"], sep["us_per_req"])
        lines.append(f"- the hop's price (forwarded ÷ separate instance): RPS "
                     f"{fwd['rps'] / sep['rps']:.2f}× ({fwd['rps']:,.0f} vs {sep['rps']:,.0f}); "
                     f"server CPU per request {fmt(c, '.2f', '×')} "
                     f"({fmt(fwd['us_per_req'], '.1f')} vs {fmt(sep['us_per_req'], '.1f')} µs/req); "
                     f"p99 {fmt(fwd['p99'], '.2f')} vs {fmt(sep['p99'], '.2f')} ms")
    if fwd:
        lines.append(f"- forwarded row CPU split: `/` pool {fmt(fwd['us_site'], '.1f')} µs/req "
                     f"(parse, route, forward, relay), `{PREFIX}` pool "
                     f"{fmt(fwd['us_reports'], '.1f')} µs/req (the app), master "
                     f"{fmt(fwd['us_master'], '.2f')} µs/req")

    checks = []
    if site:
        idle = (site["us_reports"] or 0) <= 0.05 * (site["us_per_req"] or 1)
        checks.append(f"`/` row left the `{PREFIX}` pool idle "
                      f"({fmt(site['us_reports'], '.2f')} µs/req): {'yes' if idle else '**NO**'}")
    if fwd:
        got = (fwd["us_reports"] or 0) > 0
        checks.append(f"`{PREFIX}` pool received the forwarded traffic "
                      f"({fmt(fwd['us_reports'], '.1f')} µs/req): {'yes' if got else '**NO**'}")
    errs = sum(r.get("errors", 0) for r in rows if r["status"] == "ok")
    checks.append(f"errors (non-2xx + socket) over all rows: {errs}")
    lines += [f"- {c}" for c in checks]
    noisy = [r["server"] for r in rows if r["status"] == "ok" and r["other_pct"] > 10]
    if noisy:
        lines.append(f"- other CPU above 10 % of a core in: {', '.join(noisy)} (shared machine: "
                     "read those rows with care)")
    return lines


def header(args, cfgs):
    hargs = argparse.Namespace(threads=args.threads, connections=args.connections,
                               duration=args.duration, warmup=args.warmup, repeat=args.repeat,
                               workers=args.workers)
    head = compare.header(hargs).replace("## ferrocorn benchmark",
                                         "## ferrocorn worker pools benchmark")
    return head + "\n" + "\n".join([
        f"- ferrocorn command: `{args.ferrocorn}` "
        f"({compare.cmd_version(shlex.split(args.ferrocorn) + ['--version'])}), every start "
        "with `-b 127.0.0.1:PORT --no-control-socket`",
        f"- app: `{MODULE}:site` answers `{SITE_BODY.decode()}`, `{MODULE}:reports` answers "
        f"`{REPORTS_BODY.decode()}` (13 bytes each; every row checks its body before the load)",
        "- servers: " + "; ".join(f"{c.key}: `{c.describe}`" for c in cfgs)
        + " (rows 2 and 3 are one server process, measured one after the other)",
        "- server µs CPU/req: the whole process tree (master + every worker of every pool), "
        f"split by process title (`{POOL_MARK.strip()}` in /proc/PID/cmdline = the "
        f"`{PREFIX}` pool)",
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="measured wrk seconds (10)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up seconds per row (2)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds; server order alternating; median per row (1)")
    ap.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (2)")
    ap.add_argument("--workers", type=int, default=2, help="the / pool's sync workers (2)")
    ap.add_argument("--pool-workers", type=int, default=2,
                    help="the /reports/ pool's sync workers (2)")
    ap.add_argument("--ferrocorn", default=f"{shlex.quote(sys.executable)} -m ferrocorn",
                    help="the ferrocorn command (this Python's -m ferrocorn)")
    compare.add_run_args(ap)
    args = ap.parse_args()
    compare.require_wrk()

    cfgs = configs(args)
    ws = compare.Workspace("ferrocorn-pools-bench-")
    apps_dir = os.path.join(ws.tmp, "apps")
    os.makedirs(apps_dir)
    with open(os.path.join(apps_dir, f"{MODULE}.py"), "w") as f:
        f.write(textwrap.dedent(APP_SOURCE).lstrip())
    compare.APPS_DIR = apps_dir   # every server's cwd

    head = header(args, cfgs)
    log(head)
    by_key = {}
    seq = 0
    try:
        for rnd in range(args.repeat):
            for cfg in compare.round_order(cfgs, rnd):
                seq += 1
                log(f"[round {rnd + 1}/{args.repeat}] {cfg.key}")
                for row in measure_config(cfg, args, ws, seq, compare.round_order(cfg.rows, rnd)):
                    by_key.setdefault(row["key"], []).append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    rows = [merge(by_key[k]) for k in ORDER if k in by_key]
    parts = [head, "", "### Worker pools: the `/` path, the forwarded path, and a separate instance",
             "", table(rows), "", "Targets and checks:", ""] + summary(rows) + [""]
    compare.emit("\n".join(parts), args.out)


if __name__ == "__main__":
    main()
