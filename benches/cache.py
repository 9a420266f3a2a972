#!/usr/bin/env python3
"""Cache HIT throughput: ferrocorn --cache against HAProxy's cache and nginx proxy_cache, one run.

Usage (from the repository root)::

    python benches/cache.py [--duration 10] [--warmup 2] [--repeat 1] [--workers 2]
        [--servers ferrocorn-cache,haproxy,nginx,nginx-ofc,ferrocorn,hyper] [--with-varnish]
        [--ferrocorn CMD] [--hello-server PATH] [--out FILE.md]

Every row serves the same WSGI app: a 13-byte ``Hello, World!`` with ``Cache-Control:
max-age=3600`` (written by the script into a temp dir). Rows:

* ``ferrocorn-cache`` — ``ferrocorn -w 2 -k sync --cache``: ferrocorn's own response cache.
* ``haproxy`` — HAProxy (``nbthread 2``) with a ``cache`` section (256 MB, max-age 3600),
  ``http-request cache-use`` / ``http-response cache-store``, in front of a backend.
* ``nginx`` — nginx (``worker_processes 2``) with ``proxy_cache`` (``proxy_cache_path`` in the
  temp dir, key ``$scheme$host$request_uri``), upstream ``keepalive`` over HTTP/1.1, in front of
  a backend.
* ``nginx-ofc`` — the same plus ``open_file_cache``: without it nginx opens, reads and closes
  the cache file on every hit, a large part of its cost per hit; the ratio worth quoting is
  against the faster of the two nginx rows.
* ``ferrocorn`` — ``ferrocorn -w 2 -k sync`` without the cache: the reference for "a hit is at
  least 1.5× ferrocorn's own uncached hello".
* ``varnish`` (``--with-varnish``; skipped when ``varnishd`` is missing) — Varnish, malloc storage.
* ``hyper`` — the bare hyper hello (``crates/bench/examples/hello_server.rs``, one runtime thread
  per worker), no cache: the ceiling of a server that only reads a request and writes the same
  13 bytes, on the cores wrk shares. ``hyper ÷ ferrocorn`` bounds any "hit ÷ uncached hello".

The backend behind the proxies is ``ferrocorn -w 1 -k sync`` without ``--cache``, started fresh
for each row. Every cached row must prove it hits before it is measured: one request warms the
cache, the second one on the same keep-alive connection must come back ``X-Cache-Status: HIT``
(each proxy adds that header; ferrocorn's cache sends it itself), else the row is **no cache
hit** and the run goes on. During the measured window the app counts its calls (one byte
appended to a file per call, so every worker of every process counts), which must stay 0.

Latency is measured twice. wrk's closed loop saturates the machine, so its p99 grows with the
throughput a server reaches (client and server share two cores; the tail is time in the run
queue, `perf sched` shows the same maximum delay for wrk's threads as for the server's). So each
row is also driven in an open loop at the same offered load for every server (``--open-rate``,
default 30,000 req/s, below every server's capacity here) by ``ferrocorn bench --rate``, whose
latency counts from each request's intended send time (no coordinated omission): the p99 worth
comparing between servers.

"server µs CPU/req" is the CPU time of the serving process tree only — for a proxy, the proxy's,
not the backend's; the backend's CPU is its own column, next to the app calls, to show it stayed
idle. The idle wait, start and stop by PID (nginx, HAProxy and Varnish run in the foreground and
are stopped by their PID like any server), /proc CPU accounting, wrk running and parsing, and the
header are ``compare.py``'s. Loopback only; standard library only; Linux only.

Needs ``wrk``, ``haproxy`` (``apt-get install -y haproxy``) and ``nginx``
(``apt-get install -y nginx-light``); ``varnishd`` (``apt-get install -y varnish``) only for
``--with-varnish``. A missing proxy turns its row into **not installed**, with the command to
install it.
"""

import argparse
import http.client
import grp
import os
import pwd
import re
import shlex
import shutil
import statistics
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

log = compare.log
fmt = compare.fmt

MODULE = "cache_hello"
BODY = b"Hello, World!"
CALLS_ENV = "CACHE_BENCH_CALLS_FILE"
HIT_TARGET = 1.5  # ferrocorn --cache hit ÷ ferrocorn uncached hello, same run

APP_SOURCE = '''
    """Hello, World! (13 bytes), cacheable for an hour; benches/cache.py writes this file.

    With CACHE_BENCH_CALLS_FILE set, every call appends one byte to that file, so the bench
    counts the requests that reached the app, over every worker, from the file's size. Without
    it (the uncached reference row) the app is the plain hello."""
    import os

    BODY = b"Hello, World!"
    HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY))),
               ("Cache-Control", "max-age=3600")]
    _CALLS = os.environ.get("CACHE_BENCH_CALLS_FILE")

    if _CALLS:
        _FD = os.open(_CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

        def app(environ, start_response):
            os.write(_FD, b".")
            start_response("200 OK", HEADERS)
            return [BODY]
    else:
        def app(environ, start_response):
            start_response("200 OK", HEADERS)
            return [BODY]
    '''

# --------------------------------------------------------------------------
# proxy configurations
# --------------------------------------------------------------------------

HAPROXY_CFG = """\
global
    nbthread {threads}
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

cache hello
    total-max-size 256
    max-age 3600

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    http-request cache-use hello
    http-response cache-store hello
    http-response set-header X-Cache-Status HIT if {{ res.cache_hit }}
    http-response set-header X-Cache-Status MISS unless {{ res.cache_hit }}
    server app 127.0.0.1:{upstream}
"""

# daemon, pid and error_log come from -g on the command line (nginx refuses them twice).
NGINX_CONF = """\
{user}worker_processes {workers};
worker_rlimit_nofile 16384;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
{open_file_cache}    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=hello:10m max_size=256m inactive=60m
                     use_temp_path=off;
    upstream app_server {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app_server;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_cache hello;
            proxy_cache_key $scheme$host$request_uri;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""

# The nginx-ofc row: keep the cache files' descriptors open between hits (without it, nginx's
# proxy_cache opens, reads and closes the cache file on every hit).
OPEN_FILE_CACHE = """\
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
"""

VARNISH_VCL = """\
vcl 4.1;

backend default {{
    .host = "127.0.0.1";
    .port = "{upstream}";
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache-Status = "HIT";
    }} else {{
        set resp.http.X-Cache-Status = "MISS";
    }}
}}
"""


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def ferrocorn_argv(args, port, workers, *extra):
    return shlex.split(args.ferrocorn) + ["--bind", f"127.0.0.1:{port}", "-w", str(workers),
                                          "-k", "sync", *extra, f"{MODULE}:app"]


def haproxy_argv(args, port, upstream, d):
    cfg = _write(os.path.join(d, "haproxy.cfg"),
                 HAPROXY_CFG.format(threads=args.workers, port=port, upstream=upstream))
    return ["haproxy", "-db", "-f", cfg]  # -db: foreground, one process


def nginx_argv(args, port, upstream, d, open_files=False):
    prefix = os.path.join(d, "nginx")
    os.makedirs(os.path.join(prefix, "tmp"))
    # Run as root, nginx would drop its workers to its compile-time user, which cannot enter
    # the private temp dir holding the cache: keep them as the invoking user.
    user = ""
    if os.geteuid() == 0:
        user = (f"user {pwd.getpwuid(os.geteuid()).pw_name} "
                f"{grp.getgrgid(os.getegid()).gr_name};\n")
    conf = _write(os.path.join(prefix, "nginx.conf"),
                  NGINX_CONF.format(user=user, workers=args.workers, prefix=prefix, port=port,
                                    upstream=upstream, open_file_cache=OPEN_FILE_CACHE if open_files else ""))
    err = os.path.join(prefix, "error.log")
    return ["nginx", "-p", prefix + "/", "-e", err, "-c", conf,
            "-g", f"daemon off; master_process on; pid {prefix}/nginx.pid; error_log {err} warn;"]


def varnish_argv(args, port, upstream, d):
    vcl = _write(os.path.join(d, "hello.vcl"), VARNISH_VCL.format(upstream=upstream))
    # -F: foreground; -j none: no privilege separation (the work dir is private to this user);
    # -T none: no management port.
    return ["varnishd", "-F", "-j", "none", "-T", "none", "-n", os.path.join(d, "varnish"),
            "-a", f"127.0.0.1:{port}", "-f", vcl, "-s", "malloc,256m",
            "-p", f"thread_pools={args.workers}"]


class Leg:
    """One row: how to start its server, whether a proxy fronts a backend, whether it caches."""

    def __init__(self, key, server, config, argv_fn, binary, install, proxy=False, cached=True):
        self.key = key
        self.server = server
        self.config = config
        self.argv_fn = argv_fn    # (args, port, upstream port or None, row dir) -> argv
        self.binary = binary      # checked on PATH before the row (None: the --ferrocorn command)
        self.install = install    # how to get it, for the "not installed" row
        self.proxy = proxy        # a backend is started behind it
        self.cached = cached      # must answer X-Cache-Status: HIT after one warm request


def legs(args):
    w, bw = args.workers, args.backend_workers
    backend = f"→ ferrocorn -w {bw} -k sync"
    return {
        "ferrocorn-cache": Leg(
            "ferrocorn-cache", "ferrocorn --cache", f"-w {w} -k sync --cache",
            lambda a, p, u, d: ferrocorn_argv(a, p, a.workers, "--cache"), None,
            "a build with --cache"),
        "haproxy": Leg(
            "haproxy", "HAProxy cache", f"nbthread {w}, cache 256 MB, max-age 3600 {backend}",
            haproxy_argv, "haproxy", "apt-get install -y haproxy", proxy=True),
        "nginx": Leg(
            "nginx", "nginx proxy_cache", f"worker_processes {w}, upstream keepalive {backend}",
            nginx_argv, "nginx", "apt-get install -y nginx-light", proxy=True),
        "nginx-ofc": Leg(
            "nginx-ofc", "nginx proxy_cache + open_file_cache",
            f"worker_processes {w}, upstream keepalive, open_file_cache {backend}",
            lambda a, p, u, d: nginx_argv(a, p, u, d, open_files=True), "nginx",
            "apt-get install -y nginx-light", proxy=True),
        "ferrocorn": Leg(
            "ferrocorn", "ferrocorn (uncached)", f"-w {w} -k sync",
            lambda a, p, u, d: ferrocorn_argv(a, p, a.workers), None, "", cached=False),
        "varnish": Leg(
            "varnish", "Varnish", f"thread_pools {w}, malloc 256 MB {backend}",
            varnish_argv, "varnishd", "apt-get install -y varnish", proxy=True),
        # The ceiling: a server that does nothing per request but parse and answer the fixed
        # 13 bytes (one read, one write), no cache, no Python.
        "hyper": Leg(
            "hyper", "bare hyper hello (ceiling)", f"hello_server, {w} runtime threads",
            lambda a, p, u, d: [compare.hello_server_path(a.hello_server), str(p), "0",
                                str(a.workers)],
            None, "cargo build --release --example hello_server -p ferrocorn-bench",
            cached=False),
    }


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


def probe(port, n=2):
    """``n`` GETs of / on one keep-alive connection: [(status, X-Cache-Status, body)], error."""
    got = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for _ in range(n):
            conn.request("GET", "/")
            r = conn.getresponse()
            got.append((r.status, r.getheader("X-Cache-Status"), r.read()))
        return got, None
    except (OSError, http.client.HTTPException) as e:
        return got, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def check_answer(leg, port):
    """None when the server answers right; else (status, error). A cached row must answer the
    second of two requests (one connection) from its cache: ``X-Cache-Status: HIT``."""
    got, err = probe(port)
    seen = ", ".join(f"{s} X-Cache-Status={c}" for s, c, _ in got)
    if err:
        return "wrong answer", f"{err} (after: {seen or 'nothing'})"
    for status, _, body in got:
        if status != 200 or body != BODY:
            return "wrong answer", f"HTTP {status}, body {body[:40]!r} (expected 200 {BODY!r})"
    if leg.cached and (got[1][1] or "").strip().upper() != "HIT":
        return "no cache hit", (f"warm-up request then a second one on the same connection: "
                                f"{seen}; the second must carry X-Cache-Status: HIT")
    if not leg.cached and (got[1][1] or "").strip().upper() == "HIT":
        return "wrong answer", f"the uncached reference answered from a cache ({seen})"
    return None


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def start_failure(leg, srv, err):
    detail = compare.first_lines(srv.err_path) or compare.first_lines(srv.out_path)
    if leg.key == "ferrocorn-cache" and re.search(r"--cache|unknown option|unrecognized|"
                                                  r"unexpected argument|no such option", detail):
        status = "unsupported (--cache)"
    else:
        status = "failed to start"
    return status, f"{err}; stderr: {detail}" if detail else err


def measure(leg, args, ws, seq):
    row = {"key": leg.key, "server": leg.server, "config": leg.config, "status": "ok",
           "notes": []}
    binary = leg.binary or shlex.split(args.ferrocorn)[0]
    if shutil.which(binary, path=ws.env.get("PATH")) is None:
        row.update(status="not installed",
                   error=f"{binary}: command not found" + (f" ({leg.install})" if leg.install else ""))
        return row
    if leg.proxy and shutil.which(shlex.split(args.ferrocorn)[0], path=ws.env.get("PATH")) is None:
        row.update(status="not installed", error=f"{args.ferrocorn}: command not found (backend)")
        return row

    idle_ok, busy = compare.wait_for_idle(args.idle_threshold, args.idle_timeout)
    if not idle_ok:
        row["notes"].append(f"not idle ({busy:.0f}% busy)")
        log(f"  machine still {busy:.0f}% busy after {args.idle_timeout:.0f} s, going on")

    d = os.path.join(ws.tmp, f"{seq:03d}-{leg.key}")
    os.makedirs(d)
    calls = os.path.join(d, "app-calls")
    counted_env = dict(ws.env, **{CALLS_ENV: calls})
    backend = front = None
    try:
        upstream = None
        if leg.proxy:
            upstream = compare.free_port()
            argv = ferrocorn_argv(args, upstream, args.backend_workers)
            backend = compare.Server(argv, counted_env, ws.logdir, f"{seq:03d}-{leg.key}-backend")
            log(f"  backend $ {' '.join(argv)}")
            backend.start()
            err = backend.wait_ready(upstream, args.start_timeout)
            if err is not None:
                status, error = start_failure(leg, backend, err)
                row.update(status=f"backend {status}", error=error)
                return row

        port = compare.free_port()
        argv = leg.argv_fn(args, port, upstream, d)
        # The uncached reference runs the plain app (no call counting), as compare.py's hello.
        env = ws.env if not leg.cached else counted_env
        front = compare.Server(argv, env, ws.logdir, f"{seq:03d}-{leg.key}")
        log(f"  $ {' '.join(argv)}")
        front.start()
        err = front.wait_ready(port, args.start_timeout)
        if err is not None:
            status, error = start_failure(leg, front, err)
            row.update(status=status, error=error)
            return row
        wrong = check_answer(leg, port)
        if wrong:
            row.update(status=wrong[0], error=wrong[1])
            log(f"  !!! {leg.key}: {wrong[0].upper()}: {wrong[1]}")
            return row

        url = f"http://127.0.0.1:{port}/"
        if args.warmup > 0:
            compare.run_wrk(url, args.threads, args.connections, args.warmup, False)

        calls0 = file_size(calls)
        before = front.snapshot()
        bbefore = backend.snapshot() if backend else None
        sb0, _ = compare.sys_cpu()
        t0 = time.monotonic()
        out, wrk_cpu, rc = compare.run_wrk(url, args.threads, args.connections, args.duration, True)
        wall = time.monotonic() - t0
        sb1, _ = compare.sys_cpu()
        after = front.snapshot()
        bafter = backend.snapshot() if backend else None
        calls1 = file_size(calls)
        alive = front.proc.poll() is None

        res = compare.parse_wrk(out)
        if rc != 0 or res["rps"] is None:
            row.update(status="wrk failed", error=" | ".join(out.strip().splitlines()[-3:]))
            return row
        srv_cpu = compare.tree_cpu_delta(before, after)
        be_cpu = compare.tree_cpu_delta(bbefore, bafter) if backend else 0.0
        other = (sb1 - sb0) / compare.CLK_TCK - srv_cpu - be_cpu - wrk_cpu
        reqs = res["requests"] or res["rps"] * wall
        row.update(
            rps=res["rps"], p50=res["p50"], p99=res["p99"],
            errors=res["socket_errors"] + res["non2xx"],
            srv_cpu_pct=100.0 * srv_cpu / wall,
            us_per_req=1e6 * srv_cpu / reqs if reqs else None,
            backend_cpu_pct=100.0 * be_cpu / wall if backend else None,
            backend_us_per_req=1e6 * be_cpu / reqs if backend and reqs else None,
            app_calls=calls1 - calls0 if leg.cached else None,
            wrk_cpu_pct=100.0 * wrk_cpu / wall,
            other_pct=100.0 * other / wall,
        )
        if leg.cached and row["app_calls"]:
            row["notes"].append(f"**{row['app_calls']} requests reached the app**")
        if not alive:
            row["notes"].append("server exited during run")
        if row["other_pct"] > args.noisy_threshold:
            row["notes"].append("noisy")
        if args.open_rate > 0:
            row.update(compare.run_open_loop(url, args))
        return row
    finally:
        if front is not None:
            front.stop()
        if backend is not None:
            backend.stop()


def merge(rows):
    """compare.merge_rounds plus this script's columns (medians; app calls summed)."""
    base = compare.merge_rounds(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    for k in ("backend_cpu_pct", "backend_us_per_req"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        base[k] = statistics.median(vals) if vals else None
    calls = [r["app_calls"] for r in ok if r.get("app_calls") is not None]
    base["app_calls"] = sum(calls) if calls else None
    return base


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def ratio(a, b):
    return a / b if a and b else None


def table(rows, open_rate):
    fc = next((r for r in rows if r["key"] == "ferrocorn-cache" and r["status"] == "ok"), None)
    at = f"@ {open_rate / 1000:g}k/s"
    out = ["| server | config | RPS | p50 ms | p99 ms | errors | server µs CPU/req | server CPU "
           "| backend µs CPU/req | backend CPU | app calls | wrk CPU | other CPU "
           f"| ferrocorn-cache ÷ row | p50 ms {at} | p99 ms {at} | p99.9 ms {at} | notes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(compare.failed_row(r, 14))
            continue
        rr = ratio(fc and fc["rps"], r["rps"]) if r is not fc else None
        calls = "—" if r.get("app_calls") is None else str(r["app_calls"])
        out.append(
            f"| {r['server']} | {r['config']} | {r['rps']:,.0f} | {fmt(r['p50'], '.2f')} "
            f"| {fmt(r['p99'], '.2f')} | {r['errors']} | {fmt(r['us_per_req'], '.1f')} "
            f"| {fmt(r['srv_cpu_pct'], '.0f', '%')} | {fmt(r.get('backend_us_per_req'), '.2f')} "
            f"| {fmt(r.get('backend_cpu_pct'), '.1f', '%')} | {calls} "
            f"| {fmt(r['wrk_cpu_pct'], '.0f', '%')} | {fmt(r['other_pct'], '.0f', '%')} "
            f"| {fmt(rr, '.2f', '×')} | {fmt(r.get('open_p50'), '.2f')} "
            f"| {fmt(r.get('open_p99'), '.2f')} | {fmt(r.get('open_p999'), '.2f')} "
            f"| {'; '.join(r['notes'] + ([r['open_error']] if r.get('open_error') else []))} |")
    return "\n".join(out)


def summary(rows):
    by = {r["key"]: r for r in rows}
    fc = by.get("ferrocorn-cache")
    lines = []
    if fc is None:
        lines.append("- ferrocorn-cache not in this run: no ratios")
    elif fc["status"] != "ok":
        lines.append(f"- ferrocorn-cache: **{fc['status']}**, no ratios "
                     f"({(fc.get('error') or '')[:200]})")
    else:
        for key, label, target in (("haproxy", "HAProxy cache", None),
                                   ("nginx", "nginx proxy_cache", None),
                                   ("nginx-ofc", "nginx proxy_cache + open_file_cache", None),
                                   ("varnish", "Varnish", None),
                                   ("ferrocorn", "ferrocorn uncached hello", HIT_TARGET),
                                   ("hyper", "bare hyper hello (ceiling)", None)):
            r = by.get(key)
            if r is None:
                continue
            if r["status"] != "ok":
                lines.append(f"- ferrocorn-cache / {label}: n/a ({r['status']})")
                continue
            rps = ratio(fc["rps"], r["rps"])
            verdict = "" if target is None else (
                f" (target ≥ {target}×: {'met' if rps >= target else '**NOT met**'})")
            lines.append(f"- ferrocorn-cache / {label}: {rps:.2f}× RPS{verdict}; server CPU per "
                         f"request {fmt(fc['us_per_req'], '.1f')} vs {fmt(r['us_per_req'], '.1f')} µs; "
                         f"p99 {fmt(fc['p99'], '.2f')} vs {fmt(r['p99'], '.2f')} ms saturated, "
                         f"{fmt(fc.get('open_p99'), '.2f')} vs {fmt(r.get('open_p99'), '.2f')} ms "
                         f"at the same offered load")
    hello, hyper = by.get("ferrocorn"), by.get("hyper")
    if hello and hyper and hello["status"] == hyper["status"] == "ok":
        lines.append(f"- ceiling: bare hyper hello / ferrocorn uncached hello: "
                     f"{ratio(hyper['rps'], hello['rps']):.2f}× RPS — a server with no work per "
                     f"request beyond one read and one write, on the same cores as wrk")
    for r in rows:
        if r["status"] == "ok" and r.get("app_calls") is not None:
            idle = r["app_calls"] == 0
            backend = ("" if r.get("backend_cpu_pct") is None else
                       f", backend CPU {fmt(r['backend_cpu_pct'], '.1f', '%')} of a core")
            lines.append(f"- {r['server']}: app calls in the measured window: {r['app_calls']}"
                         f"{backend} "
                         f"({'every request was a hit' if idle else '**not all hits**'})")
    return lines


def header(args):
    hargs = argparse.Namespace(threads=args.threads, connections=args.connections,
                               duration=args.duration, warmup=args.warmup, repeat=args.repeat,
                               workers=f"{args.workers} (the backend behind a proxy: "
                                       f"{args.backend_workers})")
    head = compare.header(hargs).replace("## ferrocorn benchmark", "## ferrocorn cache benchmark")
    return head + "\n" + "\n".join([
        f"- ferrocorn command: `{args.ferrocorn}` "
        f"({compare.cmd_version(shlex.split(args.ferrocorn) + ['--version'])})",
        f"- proxies: {compare.cmd_version(['haproxy', '-v'])}; "
        f"{compare.cmd_version(['nginx', '-v'])}"
        + (f"; {compare.cmd_version(['varnishd', '-V'])}" if args.with_varnish else ""),
        f"- app: `{MODULE}:app`, `Hello, World!` (13 bytes) with `Cache-Control: max-age=3600`; "
        "each cached row proved `X-Cache-Status: HIT` on the second of two requests before the "
        "load; \"app calls\" counts the requests that reached the app during the measured window",
        "- server µs CPU/req: the serving process tree only (for a proxy, the proxy's); the "
        "backend's CPU is in its own columns",
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="measured wrk seconds (10)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up seconds (2)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds; rows interleaved per round, order alternating; median per row (1)")
    ap.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (2)")
    ap.add_argument("--workers", type=int, default=2,
                    help="ferrocorn workers, HAProxy nbthread, nginx worker_processes (2)")
    ap.add_argument("--backend-workers", type=int, default=1,
                    help="workers of the ferrocorn backend behind the proxies (1)")
    ap.add_argument("--hello-server", default=None,
                    help="the bare hyper hello binary of the ceiling row (default: built once "
                         "from crates/bench/examples/hello_server.rs)")
    ap.add_argument("--servers", default="ferrocorn-cache,haproxy,nginx,nginx-ofc,ferrocorn,hyper",
                    help="rows, in this order (ferrocorn-cache,haproxy,nginx,nginx-ofc,ferrocorn; "
                         "also varnish)")
    ap.add_argument("--with-varnish", action="store_true",
                    help="add a Varnish row (skipped when varnishd is missing)")
    compare.add_open_loop_args(ap)
    ap.add_argument("--ferrocorn", default="ferrocorn",
                    help="the ferrocorn command, e.g. 'python -m ferrocorn' (ferrocorn)")
    compare.add_run_args(ap)
    args = ap.parse_args()
    compare.require_wrk()

    known = legs(args)
    keys = [s.strip() for s in args.servers.split(",") if s.strip()]
    for k in keys:
        if k not in known:
            raise SystemExit(f"unknown server {k!r} (known: {', '.join(known)})")
    if args.with_varnish and "varnish" not in keys:
        if shutil.which("varnishd"):
            keys.append("varnish")
        else:
            log("--with-varnish: varnishd not found on PATH (apt-get install -y varnish), skipped")
    if "varnish" in keys:
        args.with_varnish = True
    for k in keys:
        b = known[k].binary
        if b and shutil.which(b) is None:
            log(f"{b} not found on PATH: row {k} will say so ({known[k].install})")
    if "hyper" in keys:  # built (once) before anything is measured
        args.hello_server = compare.hello_server_path(args.hello_server)
    chosen = [known[k] for k in keys]

    ws = compare.Workspace("ferrocorn-cache-bench-")
    apps_dir = os.path.join(ws.tmp, "apps")
    os.makedirs(apps_dir)
    _write(os.path.join(apps_dir, f"{MODULE}.py"), textwrap.dedent(APP_SOURCE).lstrip())
    compare.APPS_DIR = apps_dir   # every server's cwd

    head = header(args)
    log(head)
    by_key = {}
    seq = 0
    try:
        for rnd in range(args.repeat):
            for leg in compare.round_order(chosen, rnd):
                seq += 1
                log(f"[round {rnd + 1}/{args.repeat}] {leg.key}")
                row = measure(leg, args, ws, seq)
                compare.log_row(row)
                if row["status"] == "ok" and row.get("backend_us_per_req") is not None:
                    log(f"  backend {row['backend_us_per_req']:.2f} µs/req, "
                        f"{row['app_calls']} app calls")
                by_key.setdefault(leg.key, []).append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    rows = [merge(by_key[leg.key]) for leg in chosen if leg.key in by_key]
    report = "\n".join([head, "", "### Cache HIT throughput", "", table(rows, args.open_rate), "",
                        "Summary:", ""] + summary(rows) + [""])
    compare.emit(report, args.out)


if __name__ == "__main__":
    main()
