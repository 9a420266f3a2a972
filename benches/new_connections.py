#!/usr/bin/env python3
"""Benchmark one TCP connection per request: ferrocorn against gunicorn and granian, every worker
class, directly and behind nginx's default proxy, in one run.

Usage (from the repository root)::

    python benches/new_connections.py [--workers 2,4] [--classes sync,gthread,gevent,asgi]
        [--requests 10000] [--concurrency 100] [--nginx-duration 5] [--close-duration 0]
        [--rounds 1] [--out FILE.md]

Client patterns, each opening a new connection for every request to the app server:

* **direct** — the load test of Gunicorn's performance guides, ``ab -n 10000 -c 100`` (HTTP/1.0,
  no keep-alive), against the server itself, after a discarded ``ab -n 2000``.
* **nginx** — the deployment of Gunicorn's documentation: nginx in front with the plain
  ``proxy_pass`` block (no ``proxy_http_version 1.1``, no upstream ``keepalive``), so nginx speaks
  HTTP/1.0 to the app server and opens a connection per request. The client, ``wrk -t2 -c64``,
  keeps its own connections to nginx alive.
* **close** (with ``--close-duration N``) — ``wrk -t2 -c64 -H 'Connection: close'`` against the
  server: a new connection per request from a client with two threads, so the rate is not
  capped at one client core as ``ab``'s is (the client still shares the machine).

Rows per class: ferrocorn ``-k CLASS``, gunicorn with the same class (``gthread --threads 4``,
``gevent --worker-connections 1000``, ASGI through uvicorn's worker, or gunicorn's own ``-k asgi``
when that does not import), and granian (``wsgi`` for the WSGI classes, ``asgi`` for asgi) with
its defaults. The app is a 13-byte hello. "µs CPU/req" is the app server's whole process tree
(never nginx's, which is its own column) over the measured window, divided by completed requests.

Targets (issue 15): every ferrocorn class ≥ 1.5× gunicorn's same class; sync and asgi ≥ 1.2×
granian, directly and behind nginx; no failed requests.

The idle wait, start and stop by PID, /proc CPU accounting are ``compare.py``'s; the apps are
``worker_classes.py``'s, written into a temp dir. nginx runs in the foreground with its own
config and prefix in that dir and is stopped by its PID. Loopback only; every run is bounded.
Needs ``ab`` (apache2-utils), ``wrk`` and ``nginx`` on PATH. Linux only.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (benches/compare.py)
import worker_classes  # noqa: E402  (its apps and helpers)

log = compare.log
fmt = compare.fmt
Variant = compare.Variant

_fc, _gu, _granian = worker_classes._fc, worker_classes._gu, worker_classes._granian

# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------


def variants_for(klass, tools):
    """(ferrocorn, gunicorn, granian) rows for one worker class, and the app module."""
    if klass == "asgi":
        module = "wc_hello_asgi"
        fc = Variant("ferrocorn", "ferrocorn", "-k asgi", _fc("-k", "asgi"))
        if tools["uvicorn_worker"]:
            gu = Variant("gunicorn", "gunicorn", "-k uvicorn.workers.UvicornWorker",
                         _gu("-k", "uvicorn.workers.UvicornWorker"))
        else:
            gu = Variant("gunicorn", "gunicorn", "-k asgi", _gu("-k", "asgi"))
        gr = Variant("granian", "granian", "--interface asgi", _granian("asgi"))
        return module, [fc, gu, gr]
    module = "wc_hello_wsgi"
    extra = {
        "sync": ("-k", "sync"),
        "gthread": ("-k", "gthread", "--threads", "4"),
        "gevent": ("-k", "gevent", "--worker-connections", "1000"),
    }[klass]
    fc = Variant("ferrocorn", "ferrocorn", " ".join(extra), _fc(*extra))
    gu = Variant("gunicorn", "gunicorn", " ".join(extra), _gu(*extra))
    gr = Variant("granian", "granian", "--interface wsgi", _granian("wsgi"))
    return module, [fc, gu, gr]


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------


def parse_ab(out):
    """RPS, failed and non-2xx counts, p50/p99 ms from ab's report (None when absent)."""
    def num(pattern, cast=float):
        m = re.search(pattern, out, re.M)
        return cast(m.group(1)) if m else None
    return {
        "rps": num(r"^Requests per second:\s+([\d.]+)"),
        "complete": num(r"^Complete requests:\s+(\d+)", int),
        "failed": num(r"^Failed requests:\s+(\d+)", int) or 0,
        "non2xx": num(r"^Non-2xx responses:\s+(\d+)", int) or 0,
        "p50": num(r"^\s+50%\s+(\d+)"),
        "p99": num(r"^\s+99%\s+(\d+)"),
    }


def run_ab(url, requests, concurrency, timeout_s=120):
    """Run ab; returns (parsed report with the client's CPU µs per request, None) or (None,
    what went wrong)."""
    argv = ["ab", "-q", "-r", "-s", "10", "-n", str(requests), "-c", str(concurrency), url]
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                return None, f"ab did not finish within {timeout_s} s"
            time.sleep(0.05)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    res = parse_ab(text)
    if res["rps"] is None:
        return None, text.strip()[-300:]
    res["client_us"] = 1e6 * (ru.ru_utime + ru.ru_stime) / max(1, res["complete"] or 0)
    return res, None


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
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
    upstream app_server {{
        server 127.0.0.1:{upstream} fail_timeout=0;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_timeout 5;
        location / {{
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Host $http_host;
            proxy_redirect off;
            proxy_pass http://app_server;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with its own prefix, stopped by its PID."""

    def __init__(self, workdir, port, upstream):
        self.prefix = os.path.join(workdir, f"nginx-{port}")
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(prefix=self.prefix, port=port, upstream=upstream))
        self.port = port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["nginx", "-p", self.prefix, "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def error_log(self):
        return compare.first_lines(os.path.join(self.prefix, "error.log"))


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


def wrk_close(url, srv, args, ws):
    """``wrk -H 'Connection: close'``: a new connection per request from a two-threaded client
    (ab's single thread caps its rate at one core)."""
    script = os.path.join(ws.tmp, "close.lua")
    with open(script, "w") as f:
        f.write('wrk.headers["Connection"] = "close"\n')
    compare.run_wrk(url, 2, args.close_connections, 1, False, script=script)  # warm-up
    before = srv.snapshot()
    text, client_cpu, _ = compare.run_wrk(url, 2, args.close_connections, args.close_duration,
                                          True, script=script)
    after = srv.snapshot()
    w = compare.parse_wrk(text)
    n = w["requests"] or 0
    if not (w["rps"] and n):
        return {"error": text.strip()[-200:]}
    return {"rps": w["rps"], "p99": w["p99"], "errors": w["socket_errors"] + w["non2xx"],
            "us_cpu": 1e6 * compare.tree_cpu_delta(before, after) / n,
            "client_us": 1e6 * client_cpu / n}



def measure(variant, klass, module, workers, args, ws, seq):
    row = {"key": variant.key, "server": variant.server, "config": variant.config,
           "class": klass, "workers": workers, "status": "ok"}
    compare.wait_for_idle(args.idle_threshold, args.idle_timeout)
    port = compare.free_port()
    srv = compare.Server(variant.argv_fn(port, workers, module), ws.env, ws.logdir,
                         f"{seq:03d}-{klass}-{variant.key}-w{workers}")
    nginx = None
    try:
        srv.start()
        err = srv.wait_ready(port, args.start_timeout)
        if err:
            row.update(status="failed to start", error=f"{err}: {compare.first_lines(srv.err_path)}")
            return row
        url = f"http://127.0.0.1:{port}/"
        run_ab(url, min(2000, args.requests), args.concurrency)  # warm-up, discarded
        before = srv.snapshot()
        res, err = run_ab(url, args.requests, args.concurrency)
        after = srv.snapshot()
        if res is None:
            row.update(status="ab failed", error=err)
            return row
        cpu = compare.tree_cpu_delta(before, after)
        row["direct"] = dict(res, us_cpu=1e6 * cpu / max(1, res["complete"] or 0))
        if args.close_duration > 0:
            row["close"] = wrk_close(url, srv, args, ws)
        if args.nginx_duration > 0:
            nport = compare.free_port()
            nginx = Nginx(ws.tmp, nport, port)
            nginx.start()
            nurl = f"http://127.0.0.1:{nport}/"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and nginx.proc.poll() is None:
                try:
                    with urllib.request.urlopen(nurl, timeout=1) as r:
                        if r.status == 200:
                            break
                except Exception:
                    time.sleep(0.1)
            compare.run_wrk(nurl, 2, args.nginx_connections, 1, False)  # warm-up
            before, nbefore = srv.snapshot(), compare.tree(nginx.proc.pid)
            text, _, _ = compare.run_wrk(nurl, 2, args.nginx_connections, args.nginx_duration, True)
            after, nafter = srv.snapshot(), compare.tree(nginx.proc.pid)
            wrk = compare.parse_wrk(text)
            if wrk["rps"] and wrk["requests"]:
                n = wrk["requests"]
                row["nginx"] = {
                    "rps": wrk["rps"], "p50": wrk["p50"], "p99": wrk["p99"],
                    "errors": wrk["socket_errors"] + wrk["non2xx"],
                    "us_cpu": 1e6 * compare.tree_cpu_delta(before, after) / n,
                    "us_nginx": 1e6 * compare.tree_cpu_delta(nbefore, nafter) / n,
                }
            else:
                row["nginx_error"] = f"wrk failed: {text.strip()[-200:]} {nginx.error_log()}"
        return row
    finally:
        if nginx is not None:
            nginx.stop()
        srv.stop()


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def median_row(rows):
    """Median per measured number over rounds (failures kept when every round failed)."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return rows[-1]
    out = dict(ok[0])
    for part in ("direct", "nginx", "close"):
        got = [r[part] for r in ok if part in r and "error" not in r[part]]
        if not got:
            continue
        merged = {}
        for k in got[0]:
            vals = sorted(g[k] for g in got if g.get(k) is not None)
            if not vals:
                merged[k] = None
            elif k in ("failed", "non2xx", "errors"):
                merged[k] = sum(vals)
            else:
                merged[k] = vals[len(vals) // 2]
        out[part] = merged
    return out


def ratio(a, b):
    return a / b if a and b else None


def table(klass, workers, rows):
    fc = next((r for r in rows if r["key"] == "ferrocorn" and r["status"] == "ok"), None)
    out = [f"### `{klass}`, `-w {workers}`", "",
           "| server | config | ab RPS | ab p50/p99 ms | failed | µs CPU/req (ab's) | ferrocorn ÷ row "
           "| nginx RPS | nginx p99 ms | errors | µs CPU/req (+ nginx) | ferrocorn ÷ row |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(compare.failed_row(r, 10))
            continue
        d, n = r.get("direct", {}), r.get("nginx", {})
        rd = ratio(fc and fc["direct"]["rps"], d.get("rps")) if r is not fc else None
        rn = ratio(fc and fc.get("nginx", {}).get("rps"), n.get("rps")) if r is not fc else None
        out.append(
            f"| {r['server']} | `{r['config']}` | {fmt(d.get('rps'), ',.0f')} "
            f"| {fmt(d.get('p50'), '.0f')}/{fmt(d.get('p99'), '.0f')} "
            f"| {d.get('failed', 0) + d.get('non2xx', 0)} | {fmt(d.get('us_cpu'), '.1f')} "
            f"({fmt(d.get('client_us'), '.0f')}) "
            f"| {fmt(rd, '.2f', '×')} "
            f"| {fmt(n.get('rps'), ',.0f')} | {fmt(n.get('p99'), '.2f')} | {n.get('errors', '—')} "
            f"| {fmt(n.get('us_cpu'), '.1f')} (+{fmt(n.get('us_nginx'), '.1f')}) "
            f"| {fmt(rn, '.2f', '×')} |")
    return "\n".join(out)


def close_table(results, worker_counts, classes):
    """The ``--close-duration`` rows: every server, its RPS and CPU, ferrocorn ÷ row."""
    out = ["### `wrk -t2 -H 'Connection: close'`: a new connection per request from a "
           "two-threaded client (ab has one)", "",
           "| class | workers | server | RPS | p99 ms | errors | µs CPU/req (wrk's) | ferrocorn ÷ row |",
           "|---|---:|---|---:|---:|---:|---:|---:|"]
    for workers in worker_counts:
        for klass in classes:
            rows = [median_row(rs) for rs in results.get((workers, klass), {}).values()]
            fc = next((r for r in rows if r["key"] == "ferrocorn" and "close" in r), None)
            for r in rows:
                c = r.get("close")
                if not c:
                    continue
                ratio_v = ratio(fc["close"]["rps"], c["rps"]) if fc and r is not fc else None
                out.append(f"| {klass} | {workers} | {r['server']} | {fmt(c['rps'], ',.0f')} "
                           f"| {fmt(c['p99'], '.2f')} | {c['errors']} | {fmt(c['us_cpu'], '.1f')} "
                           f"({fmt(c['client_us'], '.0f')}) | {fmt(ratio_v, '.2f', '×')} |")
    return "\n".join(out) if len(out) > 4 else ""


def verdicts(klass, workers, rows):
    def get(key):
        return next((r for r in rows if r["key"] == key and r["status"] == "ok"), None)
    fc, gu, gr = get("ferrocorn"), get("gunicorn"), get("granian")
    lines = []

    def check(label, a, b, target):
        v = ratio(a, b)
        mark = "—" if v is None else ("met" if v >= target else "**missed**")
        lines.append(f"- `{klass}` `-w {workers}` {label}: {fmt(v, '.2f', '×')} (target ≥ {target}×) {mark}")

    for part, title in (("direct", "ab"), ("nginx", "behind nginx")):
        f = fc and fc.get(part, {}).get("rps")
        check(f"{title} vs gunicorn", f, gu and gu.get(part, {}).get("rps"), 1.5)
        if klass in ("sync", "asgi"):
            check(f"{title} vs granian", f, gr and gr.get(part, {}).get("rps"), 1.2)
    if fc:
        failed = fc["direct"].get("failed", 0) + fc["direct"].get("non2xx", 0)
        failed += (fc.get("nginx") or {}).get("errors", 0) or 0
        lines.append(f"- `{klass}` `-w {workers}` ferrocorn failed requests: {failed} "
                     f"{'met' if failed == 0 else '**missed**'}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="2,4", help="worker counts, comma-separated (2,4)")
    ap.add_argument("--classes", default="sync,gthread,gevent,asgi")
    ap.add_argument("--requests", type=int, default=10000, help="ab -n (10000)")
    ap.add_argument("--concurrency", type=int, default=100, help="ab -c (100)")
    ap.add_argument("--nginx-duration", type=int, default=5, help="wrk seconds behind nginx; 0 = skip (5)")
    ap.add_argument("--nginx-connections", type=int, default=64, help="wrk -c behind nginx (64)")
    ap.add_argument("--close-duration", type=int, default=0,
                    help="also wrk -H 'Connection: close' directly, this many seconds; 0 = skip (0)")
    ap.add_argument("--close-connections", type=int, default=64, help="wrk -c for --close-duration (64)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; median per row, order alternates (1)")
    compare.add_run_args(ap)
    args = ap.parse_args()

    for tool in ("ab", "wrk", "nginx"):
        if shutil.which(tool) is None and not (tool == "nginx" and args.nginx_duration == 0):
            raise SystemExit(f"{tool} not found on PATH (apt-get install apache2-utils wrk nginx-light)")
    tools = {"uvicorn_worker": worker_classes.has_module("uvicorn.workers")}
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]

    ws = compare.Workspace("ferrocorn-newconn-bench-")
    apps_dir = os.path.join(ws.tmp, "apps")
    os.makedirs(apps_dir)
    worker_classes.write_apps(apps_dir)
    compare.APPS_DIR = apps_dir

    hargs = argparse.Namespace(**dict(vars(args), threads=2, connections=args.nginx_connections,
                                      duration=args.nginx_duration, warmup=1,
                                      workers=args.workers.replace(",", " and ")))
    head = compare.titled_header(hargs, "new-connection-per-request")
    patterns = [f"`ab -n {args.requests} -c {args.concurrency}` (HTTP/1.0, a new connection per "
                "request) directly"]
    if args.nginx_duration > 0:
        patterns.append(f"`wrk -t2 -c{args.nginx_connections} -d{args.nginx_duration}s` to nginx "
                        "(keep-alive), nginx to the app server over HTTP/1.0 with a new connection "
                        "per request (Gunicorn's documented proxy block)")
    if args.close_duration > 0:
        patterns.append(f"`wrk -t2 -c{args.close_connections} -d{args.close_duration}s -H "
                        "'Connection: close'` directly")
    head += "\nClient patterns: " + "; ".join(patterns) + ".\n"
    log(head)
    results = {}
    seq = 0
    try:
        for rnd in range(args.rounds):
            for workers in worker_counts:
                for klass in classes:
                    module, variants = variants_for(klass, tools)
                    for v in compare.round_order(variants, rnd):
                        seq += 1
                        log(f"[round {rnd + 1}/{args.rounds}] {klass} -w {workers} / {v.key}")
                        row = measure(v, klass, module, workers, args, ws, seq)
                        log(f"    {row.get('status')} direct={row.get('direct', {}).get('rps')} "
                            f"nginx={row.get('nginx', {}).get('rps')} {row.get('error', '')}"
                            f"{row.get('nginx_error', '')}")
                        results.setdefault((workers, klass), {}).setdefault(v.key, []).append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    parts = [head, ""]
    summary = []
    for workers in worker_counts:
        for klass in classes:
            by_key = results.get((workers, klass))
            if not by_key:
                continue
            rows = [median_row(rs) for rs in by_key.values()]
            parts += [table(klass, workers, rows), ""]
            summary += verdicts(klass, workers, rows)
    if args.close_duration > 0:
        parts += [close_table(results, worker_counts, classes), ""]
    parts += ["Targets:", ""] + summary + [""]
    compare.emit("\n".join(parts), args.out)


if __name__ == "__main__":
    main()
