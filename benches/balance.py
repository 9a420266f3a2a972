#!/usr/bin/env python3
"""Load balancer throughput: ``ferrocorn balance`` against nginx and HAProxy, one run.

Usage (from the repository root)::

    python benches/balance.py [--duration 10] [--warmup 2] [--repeat 1] [--workers 2]
        [--servers ferrocorn,nginx,haproxy,direct] [--flask-servers ferrocorn,nginx]
        [--scenarios hello,flask | --flask] [--keepalive N] [--method round_robin]
        [--ferrocorn CMD] [--hello-server PATH] [--out FILE.md]

Every row of a scenario balances over the same two backends, started fresh for the row, and
is loaded with ``wrk -t2 -c64 --latency``. Scenario ``hello`` (the issue's round robin case):
the backends are two ``hello_server`` processes (the bare hyper hello of
``crates/bench/examples/hello_server.rs``, ``hello_server PORT 0 1``: one runtime thread each,
as two backends sharing the 2 cores would have). Rows:

* ``ferrocorn`` — ``ferrocorn balance -w 2`` with an ``--upstream`` per backend
  (``--method round_robin``, the default upstream keep-alive unless ``--keepalive``).
* ``nginx`` — nginx (``worker_processes 2``), an ``upstream`` with both servers and
  ``keepalive 32``, ``proxy_http_version 1.1``, ``proxy_set_header Connection ""``: the
  anchor's ``nginx-lb.conf`` (/work/shared/research/wave2_anchors.md), paths in a temp dir.
* ``haproxy`` — HAProxy (``nbthread 2``, ``balance roundrobin``, ``http-reuse always``,
  ``option http-keep-alive``, 65 s timeouts): the anchor's ``haproxy-lb.cfg``.
* ``relay`` — the floor of any HTTP/1 balancer here: ``relay_floor``
  (``crates/bench/examples/relay_floor.rs``), which pairs each client connection with one
  backend connection and copies bytes both ways with the same four system calls per request
  as every balancer and no HTTP work at all (no parsing, no headers added, no pool). Its CPU
  per request is the least a balancer can spend on this machine; not in the default rows
  (``--servers ferrocorn,nginx,haproxy,relay,direct``).
* ``pipelined`` — the floor of a balancer that pipelines to its upstreams:
  ``pipeline_floor`` (``crates/bench/examples/pipeline_floor.rs``), one connection per backend
  per thread, every request appended to it and sent with whatever else is pending in one
  write, responses handed back in order. No balancer compared here pipelines; the row shows
  what that lever is worth on the machine (not in the default rows either).
* ``direct`` — wrk straight at one backend: the ceiling, for context.

Scenario ``flask`` (``--flask`` runs only it): the backends are two ``ferrocorn -w 1 -k sync``
instances serving a Flask hello app (written by the script into the temp dir); rows
``ferrocorn`` and ``nginx`` by default (``--flask-servers``; ``haproxy`` and ``direct`` work
there too).

Columns: RPS, the RPS ratio against nginx and against HAProxy, p50/p99, errors, the
balancer's OWN CPU per request (its process tree only: all nginx processes, HAProxy's
threads, ferrocorn's master and workers), the backends' CPU per request in a column of its
own with each backend's share (both must be > 0: proof that both received traffic), and the
new TCP connections opened during the measured window: the delta of ``ActiveOpens`` in
``/proc/net/snmp`` minus wrk's own connects (``-c`` + 1). That counter is machine-wide; for a
balancer it is dominated by its new upstream connections, and the direct row shows the
noise floor (neighbours' connects, wrk reconnecting). Before the load every row must answer
``200 Hello, World!`` on a keep-alive connection, else it says **wrong answer** and the run
goes on. The balancer's stderr is scanned for error and warning lines, counted in the notes.
In the ``hello`` scenario each row is driven once more in an open loop at one offered load for
all (``--open-rate``, default 15,000 req/s, half the balancers' capacity here; ``ferrocorn bench
--rate``, latency from each request's intended send time): wrk's saturated p99 grows with the
throughput a balancer reaches on cores it shares with wrk, so the p99 to compare is this one.

The summary checks the issue's targets (ferrocorn row, same run): RPS ≥ 1.2× nginx and
≥ 1.15× HAProxy, p99 no worse than HAProxy's, balancer CPU per request ≤ 0.7× HAProxy's,
almost no new upstream connections (≤ 0.1 % of the requests), and in the Flask scenario
RPS ≥ 1.1× nginx; each with the measured value and MET / NOT MET.

The idle wait, start and stop by PID (nginx and HAProxy run in the foreground and are
stopped by their PID like any server), /proc CPU accounting, wrk running and parsing, and the
header are ``compare.py``'s. Loopback only; standard library only; Linux only.

Needs ``wrk``, ``haproxy`` (``apt-get install -y haproxy``) and ``nginx``
(``apt-get install -y nginx-light``); a missing proxy turns its row into **not installed**,
with the command to install it. ``hello_server`` is built once with ``cargo build --release
--example hello_server -p ferrocorn-bench`` when ``target/release/examples/hello_server`` is
missing (``--hello-server PATH`` uses another binary and never builds).
"""

# TODO(issue 18): a third row set, ``--pools`` (balancing over pools), once pools exist.

import argparse
import grp
import http.client
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
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

log = compare.log
fmt = compare.fmt

BODY = b"Hello, World!"
FLASK_MODULE = "balance_flask_hello"

# Targets from issue 18 (ferrocorn balance row ÷ peer row, same run).
TARGET_RPS_NGINX = 1.2
TARGET_RPS_HAPROXY = 1.15
TARGET_CPU_HAPROXY = 0.7      # balancer µs CPU/req ≤ 0.7 × HAProxy's
TARGET_NEW_CONN_FRACTION = 0.001   # "almost no new upstream connections": ≤ 0.1 % of requests
TARGET_FLASK_RPS_NGINX = 1.1

FLASK_SOURCE = '''
    """Flask hello for benches/balance.py (written by the script): GET / -> Hello, World!"""
    from flask import Flask

    app = Flask(__name__)


    @app.route("/")
    def hello():
        return "Hello, World!"
    '''

# --------------------------------------------------------------------------
# balancer configurations
# --------------------------------------------------------------------------

# The anchor's haproxy-lb.cfg (wave2_anchors.md), ports and paths filled in. maxconn 4096
# rather than the anchor's 8192: HAProxy refuses a maxconn it cannot back with open files
# under a low limit, and 64 connections need far fewer.
HAPROXY_CFG = """\
global
    nbthread {threads}
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 65s
    timeout server 65s
    timeout http-keep-alive 65s

frontend fe_lb
    bind 127.0.0.1:{port} backlog 4096
    default_backend pool

backend pool
    balance roundrobin
    http-reuse always
{servers}"""

# The anchor's nginx-lb.conf (wave2_anchors.md). daemon, pid and error_log come from -g on the
# command line (nginx refuses them twice).
NGINX_CONF = """\
{user}worker_processes {workers};
worker_rlimit_nofile 16384;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream pool {{
        # round robin (default)
{servers}        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def ferrocorn_balance_argv(args, port, upstreams, d):
    argv = shlex.split(args.ferrocorn) + ["balance", "-b", f"127.0.0.1:{port}",
                                          "-w", str(args.workers), "--method", args.method,
                                          "--no-control-socket"]
    for u in upstreams:
        argv += ["--upstream", f"127.0.0.1:{u}"]
    if args.keepalive is not None:
        argv += ["--keepalive", str(args.keepalive)]
    return argv


def floor_argv(example):
    """The argv function of a floor row: ``example`` (a program of ``crates/bench/examples``
    taking ``PORT UPSTREAM_PORT,... THREADS``) with one thread per balancer worker."""
    def argv(args, port, upstreams, d):
        return [compare.bench_example_path(example), str(port),
                ",".join(str(u) for u in upstreams), str(args.workers)]
    return argv


def haproxy_argv(args, port, upstreams, d):
    servers = "".join(f"    server b{i + 1} 127.0.0.1:{u}\n" for i, u in enumerate(upstreams))
    cfg = _write(os.path.join(d, "haproxy.cfg"),
                 HAPROXY_CFG.format(threads=args.workers, port=port, servers=servers))
    return ["haproxy", "-db", "-f", cfg]  # -db: foreground, one process


def nginx_argv(args, port, upstreams, d):
    prefix = os.path.join(d, "nginx")
    os.makedirs(os.path.join(prefix, "tmp"))
    # Run as root, nginx would drop its workers to its compile-time user, which cannot enter
    # the private temp dir: keep them as the invoking user (as cache.py does).
    user = ""
    if os.geteuid() == 0:
        user = (f"user {pwd.getpwuid(os.geteuid()).pw_name} "
                f"{grp.getgrgid(os.getegid()).gr_name};\n")
    servers = "".join(f"        server 127.0.0.1:{u};\n" for u in upstreams)
    conf = _write(os.path.join(prefix, "nginx.conf"),
                  NGINX_CONF.format(user=user, workers=args.workers, prefix=prefix, port=port,
                                    servers=servers))
    err = os.path.join(prefix, "error.log")
    return ["nginx", "-p", prefix + "/", "-e", err, "-c", conf,
            "-g", f"daemon off; master_process on; pid {prefix}/nginx.pid; error_log {err} warn;"]


class Leg:
    """One row: how to start the balancer in front of the backends (None: wrk goes direct)."""

    def __init__(self, key, server, config, argv_fn, binary, install):
        self.key = key
        self.server = server
        self.config = config
        self.argv_fn = argv_fn    # (args, port, [upstream ports], row dir) -> argv, or None
        self.binary = binary      # checked on PATH before the row (None: the --ferrocorn command;
                                  # "": built by the bench, nothing to check)
        self.install = install    # how to get it, for the "not installed" row


def legs(args):
    w = args.workers
    ka = "default keepalive" if args.keepalive is None else f"--keepalive {args.keepalive}"
    return {
        "ferrocorn": Leg("ferrocorn", "ferrocorn balance", f"-w {w}, --method {args.method}, {ka}",
                         ferrocorn_balance_argv, None, ""),
        "nginx": Leg("nginx", "nginx", f"worker_processes {w}, upstream keepalive 32, HTTP/1.1",
                     nginx_argv, "nginx", "apt-get install -y nginx-light"),
        "haproxy": Leg("haproxy", "HAProxy",
                       f"nbthread {w}, balance roundrobin, http-reuse always",
                       haproxy_argv, "haproxy", "apt-get install -y haproxy"),
        "relay": Leg("relay", "byte relay (floor)",
                     f"relay_floor, {w} threads, one backend connection per client, no HTTP",
                     floor_argv("relay_floor"), "",
                     "cargo build --release --example relay_floor -p ferrocorn-bench"),
        "pipelined": Leg("pipelined", "pipelining relay (floor)",
                         f"pipeline_floor, {w} threads, one connection per backend per thread, "
                         "requests batched per send, no HTTP", floor_argv("pipeline_floor"), "",
                         "cargo build --release --example pipeline_floor -p ferrocorn-bench"),
        "direct": Leg("direct", "direct", "wrk straight at one backend (the ceiling)",
                      None, None, ""),
    }


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------


class Scenario:
    def __init__(self, key, title, backend_desc, backend_argv, keys):
        self.key = key
        self.title = title
        self.backend_desc = backend_desc
        self.backend_argv = backend_argv   # port -> argv
        self.keys = keys                   # row keys, in order


def scenarios(args):
    out = []
    if "hello" in args.scenario_list:
        hello = compare.hello_server_path(args.hello_server)
        t = args.backend_threads
        out.append(Scenario(
            "hello", f"Round robin over two hyper hello backends (hello_server, {t} thread each)",
            f"hello_server PORT 0 {t}", lambda p: [hello, str(p), "0", str(t)],
            args.server_list))
    if "flask" in args.scenario_list:
        fc = shlex.split(args.ferrocorn)
        out.append(Scenario(
            "flask", "Round robin over two Flask backends (ferrocorn -w 1 -k sync)",
            f"ferrocorn -w 1 -k sync {FLASK_MODULE}:app",
            lambda p: fc + ["-b", f"127.0.0.1:{p}", "-w", "1", "-k", "sync",
                            "--no-control-socket", f"{FLASK_MODULE}:app"],
            args.flask_server_list))
    return out


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


def active_opens():
    """The machine's TCP ActiveOpens counter (connect()s that reached SYN-SENT)."""
    with open("/proc/net/snmp") as f:
        rows = [ln.split() for ln in f if ln.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def check_answer(port, n=3):
    """None when ``n`` GETs of / on one keep-alive connection answer 200 Hello, World!; else
    the error text."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for i in range(n):
            conn.request("GET", "/")
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or body != BODY:
                return f"request {i + 1}: HTTP {r.status}, body {body[:60]!r} (expected 200 {BODY!r})"
        return None
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()


LOG_PROBLEM = re.compile(r"\[(ERROR|CRITICAL|WARNING)\]|\b(error|panic|panicked)\b", re.I)


def log_problems(srv):
    """Error/warning lines in a balancer's stderr and stdout: (count, first one)."""
    lines = []
    for path in (srv.err_path, srv.out_path):
        try:
            with open(path, errors="replace") as f:
                lines += [ln.strip() for ln in f if LOG_PROBLEM.search(ln)]
        except OSError:
            pass
    return len(lines), (lines[0][:200] if lines else "")


def start_failure(leg, srv, err):
    detail = compare.first_lines(srv.err_path) or compare.first_lines(srv.out_path)
    status = "failed to start"
    if leg.key == "ferrocorn" and re.search(r"balance|--upstream|unknown option|unrecognized|"
                                            r"unexpected argument|no such option", detail):
        status = "unsupported (balance)"
    return status, f"{err}; stderr: {detail}" if detail else err


def measure(sc, leg, args, ws, seq):
    row = {"key": leg.key, "server": leg.server, "config": leg.config, "status": "ok",
           "notes": []}
    binary = leg.binary
    if binary is None:
        binary = shlex.split(args.ferrocorn)[0] if leg.argv_fn else None
    if binary and shutil.which(binary, path=ws.env.get("PATH")) is None:
        row.update(status="not installed",
                   error=f"{binary}: command not found" + (f" ({leg.install})" if leg.install else ""))
        return row

    idle_ok, busy = compare.wait_for_idle(args.idle_threshold, args.idle_timeout)
    if not idle_ok:
        row["notes"].append(f"not idle ({busy:.0f}% busy)")
        log(f"  machine still {busy:.0f}% busy after {args.idle_timeout:.0f} s, going on")

    tag = f"{seq:03d}-{sc.key}-{leg.key}"
    d = os.path.join(ws.tmp, tag)
    os.makedirs(d)
    backends = []
    front = None
    try:
        # Two backends behind a balancer; one for the direct row.
        ports = []
        for i in range(2 if leg.argv_fn else 1):
            p = compare.free_port()
            argv = sc.backend_argv(p)
            b = compare.Server(argv, ws.env, ws.logdir, f"{tag}-backend{i + 1}")
            log(f"  backend {i + 1} $ {' '.join(argv)}")
            b.start()
            backends.append(b)
            err = b.wait_ready(p, args.start_timeout)
            if err is not None:
                detail = compare.first_lines(b.err_path) or compare.first_lines(b.out_path)
                row.update(status="backend failed to start",
                           error=f"{err}; stderr: {detail}" if detail else err)
                return row
            ports.append(p)

        if leg.argv_fn:
            port = compare.free_port()
            argv = leg.argv_fn(args, port, ports, d)
            front = compare.Server(argv, ws.env, ws.logdir, tag)
            log(f"  $ {' '.join(argv)}")
            front.start()
            err = front.wait_ready(port, args.start_timeout)
            if err is not None:
                status, error = start_failure(leg, front, err)
                row.update(status=status, error=error)
                return row
        else:
            port = ports[0]
        wrong = check_answer(port)
        if wrong:
            row.update(status="wrong answer", error=wrong)
            log(f"  !!! {leg.key}: WRONG ANSWER: {wrong}")
            return row

        url = f"http://127.0.0.1:{port}/"
        if args.warmup > 0:
            compare.run_wrk(url, args.threads, args.connections, args.warmup, False)

        before = front.snapshot() if front else None
        bbefore = [b.snapshot() for b in backends]
        sb0, _ = compare.sys_cpu()
        opens0 = active_opens()
        t0 = time.monotonic()
        out, wrk_cpu, rc = compare.run_wrk(url, args.threads, args.connections, args.duration, True)
        wall = time.monotonic() - t0
        opens1 = active_opens()
        sb1, _ = compare.sys_cpu()
        after = front.snapshot() if front else None
        bafter = [b.snapshot() for b in backends]
        alive = front is None or front.proc.poll() is None

        res = compare.parse_wrk(out)
        if rc != 0 or res["rps"] is None:
            row.update(status="wrk failed", error=" | ".join(out.strip().splitlines()[-3:]))
            return row
        lb_cpu = compare.tree_cpu_delta(before, after) if front else 0.0
        be_cpus = [compare.tree_cpu_delta(x, y) for x, y in zip(bbefore, bafter)]
        be_cpu = sum(be_cpus)
        other = (sb1 - sb0) / compare.CLK_TCK - lb_cpu - be_cpu - wrk_cpu
        reqs = res["requests"] or res["rps"] * wall
        row.update(
            rps=res["rps"], p50=res["p50"], p99=res["p99"], requests=reqs,
            errors=res["socket_errors"] + res["non2xx"],
            non2xx=res["non2xx"], socket_errors=res["socket_errors"],
            srv_cpu_pct=100.0 * lb_cpu / wall if front else None,
            us_per_req=1e6 * lb_cpu / reqs if front and reqs else None,
            backend_cpu_pct=100.0 * be_cpu / wall,
            backend_us_per_req=1e6 * be_cpu / reqs if reqs else None,
            # each backend's share of the backends' CPU: both > 0 = both received traffic
            backend_shares=[c / be_cpu if be_cpu else 0.0 for c in be_cpus],
            new_conns=opens1 - opens0 - (args.connections + 1),
            wrk_cpu_pct=100.0 * wrk_cpu / wall,
            other_pct=100.0 * other / wall,
        )
        if len(be_cpus) > 1 and min(be_cpus) <= 0:
            row["notes"].append("**a backend got no traffic** (its CPU stayed 0)")
        if row["errors"]:
            row["notes"].append(f"**{res['non2xx']} non-2xx, {res['socket_errors']} socket errors**")
        if front:
            n, first = log_problems(front)
            if n:
                row["log_problems"] = n
                row["notes"].append(f"{n} error/warning log lines (first: {first})")
        if not alive:
            row["notes"].append("**balancer exited during run**")
        if row["other_pct"] > args.noisy_threshold:
            row["notes"].append("noisy")
        if args.open_rate > 0 and sc.key == "hello":
            row.update(compare.run_open_loop(url, args))
        return row
    finally:
        if front is not None:
            front.stop()
        for b in backends:
            b.stop()


def merge(rows):
    """compare.merge_rounds plus this script's columns (medians)."""
    base = compare.merge_rounds(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    for k in ("backend_cpu_pct", "backend_us_per_req", "new_conns", "requests"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        base[k] = statistics.median(vals) if vals else None
    shares = [r["backend_shares"] for r in ok if r.get("backend_shares")]
    if shares:
        base["backend_shares"] = [statistics.median(s[i] for s in shares)
                                  for i in range(len(shares[0]))]
    return base


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def ratio(a, b):
    return a / b if a and b else None


def ok_row(rows, key):
    return next((r for r in rows if r["key"] == key and r["status"] == "ok"), None)


def table(rows, open_rate):
    ng, hp = ok_row(rows, "nginx"), ok_row(rows, "haproxy")
    at = f"@ {open_rate / 1000:g}k/s"
    out = ["| server | config | RPS | ÷ nginx | ÷ HAProxy | p50 ms | p99 ms | errors "
           "| balancer µs CPU/req | balancer CPU | backends µs CPU/req | backend CPU split "
           f"| new connections | wrk CPU | other CPU | p50 ms {at} | p99 ms {at} | notes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(compare.failed_row(r, 15))
            continue
        rn = ratio(r["rps"], ng and ng["rps"]) if r is not ng else None
        rh = ratio(r["rps"], hp and hp["rps"]) if r is not hp else None
        split = "/".join(f"{100 * s:.0f}%" for s in r.get("backend_shares") or [])
        out.append(
            f"| {r['server']} | {r['config']} | {r['rps']:,.0f} | {fmt(rn, '.2f', '×')} "
            f"| {fmt(rh, '.2f', '×')} | {fmt(r['p50'], '.2f')} | {fmt(r['p99'], '.2f')} "
            f"| {r['errors']} | {fmt(r['us_per_req'], '.1f')} "
            f"| {fmt(r['srv_cpu_pct'], '.0f', '%')} | {fmt(r.get('backend_us_per_req'), '.1f')} "
            f"| {split or '—'} | {fmt(r.get('new_conns'), ',.0f')} "
            f"| {fmt(r['wrk_cpu_pct'], '.0f', '%')} | {fmt(r['other_pct'], '.0f', '%')} "
            f"| {fmt(r.get('open_p50'), '.2f')} | {fmt(r.get('open_p99'), '.2f')} "
            f"| {'; '.join(r['notes'] + ([r['open_error']] if r.get('open_error') else []))} |")
    return "\n".join(out)


def verdict(met):
    return "MET" if met else "**NOT MET**"


def target_line(label, fc, peer, peer_name, compute):
    """One target: ``compute(fc, peer)`` -> (measured text, met); n/a when a row is missing."""
    if fc is None:
        return f"- {label}: n/a (ferrocorn balance row missing or failed)"
    if peer is None:
        return f"- {label}: n/a ({peer_name} row missing or failed)"
    text, met = compute(fc, peer)
    if met is None:
        return f"- {label}: n/a ({text})"
    return f"- {label}: {text} — {verdict(met)}"


def summary(sc, rows):
    by = {r["key"]: r for r in rows}
    fc, ng, hp = ok_row(rows, "ferrocorn"), ok_row(rows, "nginx"), ok_row(rows, "haproxy")
    fraw = by.get("ferrocorn")
    lines = []
    if fraw is not None and fraw["status"] != "ok":
        lines.append(f"- ferrocorn balance: **{fraw['status']}** "
                     f"({(fraw.get('error') or '')[:200]})")

    def rps_vs(target):
        def f(a, b):
            x = a["rps"] / b["rps"]
            return f"{x:.2f}× ({a['rps']:,.0f} vs {b['rps']:,.0f} RPS)", x >= target
        return f

    if sc.key == "hello":
        lines.append(target_line(f"round robin RPS ≥ {TARGET_RPS_NGINX}× nginx", fc, ng, "nginx",
                                 rps_vs(TARGET_RPS_NGINX)))
        lines.append(target_line(f"round robin RPS ≥ {TARGET_RPS_HAPROXY}× HAProxy", fc, hp,
                                 "HAProxy", rps_vs(TARGET_RPS_HAPROXY)))

        def p99(a, b):
            if a["p99"] is None or b["p99"] is None:
                return "no p99 from wrk", None
            return f"{a['p99']:.2f} ms vs HAProxy {b['p99']:.2f} ms", a["p99"] <= b["p99"]
        lines.append(target_line("p99 no worse than HAProxy's (wrk, saturated)", fc, hp, "HAProxy", p99))

        def open_p99(a, b):
            if a.get("open_p99") is None or b.get("open_p99") is None:
                return "no open-loop pass", None
            return (f"{a['open_p99']:.2f} ms vs HAProxy {b['open_p99']:.2f} ms",
                    a["open_p99"] <= b["open_p99"])
        lines.append(target_line("p99 no worse than HAProxy's at the same offered load", fc, hp,
                                 "HAProxy", open_p99))

        def cpu(a, b):
            if not a["us_per_req"] or not b["us_per_req"]:
                return "no CPU figure", None
            x = a["us_per_req"] / b["us_per_req"]
            return (f"{x:.2f}× ({a['us_per_req']:.1f} vs {b['us_per_req']:.1f} µs/req)",
                    x <= TARGET_CPU_HAPROXY)
        lines.append(target_line(f"balancer CPU/request ≤ {TARGET_CPU_HAPROXY}× HAProxy's", fc,
                                 hp, "HAProxy", cpu))
        for key, what in (("relay", "the byte relay (no HTTP)"),
                          ("pipelined", "the pipelining relay (no HTTP)")):
            floor = ok_row(rows, key)
            if floor is None or hp is None or not floor["us_per_req"] or not hp["us_per_req"]:
                continue
            above = ""
            if fc is not None and fc["us_per_req"]:
                above = (f"; ferrocorn balance spends "
                         f"{fc['us_per_req'] - floor['us_per_req']:.1f} µs/req above it")
            lines.append(f"- floor: {what} spends {floor['us_per_req']:.1f} µs/req = "
                         f"{floor['us_per_req'] / hp['us_per_req']:.2f}× HAProxy's, at "
                         f"{ratio(floor['rps'], hp['rps']):.2f}× its RPS{above}")
    else:
        lines.append(target_line(f"Flask backends: RPS ≥ {TARGET_FLASK_RPS_NGINX}× nginx", fc, ng,
                                 "nginx", rps_vs(TARGET_FLASK_RPS_NGINX)))

    if fc is None:
        lines.append("- almost no new upstream connections: n/a (ferrocorn balance row missing "
                     "or failed)")
    else:
        limit = TARGET_NEW_CONN_FRACTION * (fc["requests"] or 0)
        peers = ", ".join(f"{r['server']} {r['new_conns']:,.0f}" for r in rows
                          if r["status"] == "ok" and r is not fc and r.get("new_conns") is not None)
        lines.append(f"- almost no new upstream connections (≤ {100 * TARGET_NEW_CONN_FRACTION:g} % "
                     f"of {fc['requests']:,.0f} requests = {limit:,.0f}): {fc['new_conns']:,.0f}"
                     f"{f' (others: {peers})' if peers else ''} — "
                     f"{verdict(fc['new_conns'] <= limit)}")

    for r in rows:
        if r["status"] != "ok" or r["key"] == "direct":
            continue
        shares = r.get("backend_shares") or []
        both = len(shares) == 2 and min(shares) > 0
        lines.append(f"- {r['server']}: both backends received traffic (CPU split "
                     f"{'/'.join(f'{100 * s:.0f}%' for s in shares)}): "
                     f"{'yes' if both else '**NO**'}; errors {r['errors']}")
    return lines


def header(args, chosen):
    hargs = argparse.Namespace(threads=args.threads, connections=args.connections,
                               duration=args.duration, warmup=args.warmup, repeat=args.repeat,
                               workers=args.workers)
    head = compare.header(hargs).replace("## ferrocorn benchmark",
                                         "## ferrocorn load balancer benchmark")
    return head + "\n" + "\n".join([
        f"- ferrocorn command: `{args.ferrocorn} balance` "
        f"({compare.cmd_version(shlex.split(args.ferrocorn) + ['--version'])})",
        f"- balancers: {compare.cmd_version(['haproxy', '-v'])}; "
        f"{compare.cmd_version(['nginx', '-v'])}",
        "- backends (two, started fresh for every row; one for `direct`): "
        + "; ".join(f"{sc.key}: `{sc.backend_desc}`" for sc in chosen),
        "- balancer µs CPU/req: the balancer's process tree only; the backends' CPU is in its "
        "own column, split per backend (both > 0: both received traffic)",
        f"- new connections: Δ ActiveOpens (/proc/net/snmp, machine-wide) over the measured "
        f"window − {args.connections + 1} (wrk's -c + 1); the direct row is the noise floor",
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
                    help="ferrocorn balance workers, HAProxy nbthread, nginx worker_processes (2)")
    ap.add_argument("--scenarios", default="hello,flask",
                    help="hello (two hello_server backends), flask (two ferrocorn Flask "
                         "backends) (hello,flask)")
    ap.add_argument("--flask", action="store_true", help="only the Flask scenario")
    ap.add_argument("--servers", default="ferrocorn,nginx,haproxy,direct",
                    help="rows of the hello scenario, in this order (ferrocorn,nginx,haproxy,direct; "
                         "also relay and pipelined, the floors without and with pipelining)")
    ap.add_argument("--flask-servers", default="ferrocorn,nginx",
                    help="rows of the Flask scenario (ferrocorn,nginx; also haproxy, direct)")
    ap.add_argument("--keepalive", type=int, default=None,
                    help="ferrocorn balance --keepalive N (default: ferrocorn's own default)")
    ap.add_argument("--method", default="round_robin",
                    help="ferrocorn balance --method (round_robin; the peers are round robin)")
    ap.add_argument("--backend-threads", type=int, default=1,
                    help="runtime threads of each hello_server backend (1)")
    ap.add_argument("--hello-server", metavar="PATH",
                    help="the hello_server binary (default target/release/examples/hello_server, "
                         "built once if missing)")
    compare.add_open_loop_args(ap, rate=15000)
    ap.add_argument("--ferrocorn", default="ferrocorn",
                    help="the ferrocorn command, e.g. 'python -m ferrocorn' (ferrocorn)")
    compare.add_run_args(ap)
    args = ap.parse_args()
    compare.require_wrk()

    args.scenario_list = ["flask"] if args.flask else [
        s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in args.scenario_list:
        if s not in ("hello", "flask"):
            raise SystemExit(f"unknown scenario {s!r} (known: hello, flask)")
    known = legs(args)
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.flask_server_list = [s.strip() for s in args.flask_servers.split(",") if s.strip()]
    for k in args.server_list + args.flask_server_list:
        if k not in known:
            raise SystemExit(f"unknown server {k!r} (known: {', '.join(known)})")
    for k in dict.fromkeys(args.server_list + args.flask_server_list):
        b = known[k].binary
        if b and shutil.which(b) is None:
            log(f"{b} not found on PATH: row {k} will say so ({known[k].install})")
    chosen = scenarios(args)

    ws = compare.Workspace("ferrocorn-balance-bench-")
    apps_dir = os.path.join(ws.tmp, "apps")
    os.makedirs(apps_dir)
    _write(os.path.join(apps_dir, f"{FLASK_MODULE}.py"), textwrap.dedent(FLASK_SOURCE).lstrip())
    compare.APPS_DIR = apps_dir   # every server's cwd

    head = header(args, chosen)
    log(head)
    by_key = {}
    seq = 0
    try:
        for rnd in range(args.repeat):
            for sc in chosen:
                for leg in compare.round_order([known[k] for k in sc.keys], rnd):
                    seq += 1
                    log(f"[round {rnd + 1}/{args.repeat}] {sc.key} / {leg.key}")
                    row = measure(sc, leg, args, ws, seq)
                    compare.log_row(row)
                    if row["status"] == "ok":
                        split = "/".join(f"{100 * s:.0f}%" for s in row["backend_shares"])
                        log(f"  backends {fmt(row['backend_us_per_req'], '.1f')} µs/req "
                            f"(split {split}), {row['new_conns']:,} new connections")
                    by_key.setdefault((sc.key, leg.key), []).append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    parts = [head, ""]
    for sc in chosen:
        rows = [merge(by_key[(sc.key, k)]) for k in sc.keys if (sc.key, k) in by_key]
        if not rows:
            continue
        parts += [f"### {sc.title}", "", table(rows, args.open_rate), "", "Targets and checks:", ""]
        parts += summary(sc, rows) + [""]
    compare.emit("\n".join(parts), args.out)


if __name__ == "__main__":
    main()
