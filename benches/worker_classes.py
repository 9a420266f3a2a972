#!/usr/bin/env python3
"""Benchmark ferrocorn's worker classes against granian, uvicorn and gunicorn, in one run.

Usage (from the repository root)::

    python benches/worker_classes.py [--duration 8] [--warmup 2] [--rounds 1]
        [--scenarios io,asgi,cpu,gthread] [--workers 2] [--out FILE.md]

Scenarios (2 workers per server by default, ``wrk -t2``):

* ``io``      I/O-bound WSGI app (``time.sleep(0.020)``), ``-c64``: ferrocorn ``-k gevent
              --worker-connections 1000`` vs gunicorn gevent vs granian wsgi; each row's RPS
              against the ideal 64 connections / 20 ms = 3200 RPS.
* ``asgi``    raw ASGI hello (13 bytes), ``-c64``: ferrocorn ``-k asgi`` vs granian ``--interface
              asgi`` vs uvicorn (httptools, uvloop) vs gunicorn with uvicorn's worker (or gunicorn's
              own ``-k asgi`` when ``uvicorn.workers`` does not import).
              Targets: ferrocorn/granian ≥ 1.1×, ferrocorn/uvicorn ≥ 1.8×.
* ``cpu``     CPU-bound WSGI app (~2 ms pure-Python loop per request), ``-c16``: ferrocorn sync vs
              gunicorn sync. Target: ferrocorn's p99 no worse than gunicorn's.
* ``gthread`` WSGI hello: ferrocorn ``-k gthread --threads 4`` vs granian wsgi (default
              blocking threads; target ≥ 1.3×) and, for reference, granian tuned with
              ``--blocking-threads 1``.

The apps are written into a temp dir by this script (nothing in ``benches/apps`` is needed). The
idle wait, start/stop by PID, /proc CPU accounting and wrk parsing are ``compare.py``'s, imported
as a module. Loopback only; every run is bounded; servers are stopped by PID. Standard library
only; Linux only.
"""

import argparse
import copy
import os
import re
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (benches/compare.py)

log = compare.log
fmt = compare.fmt
Variant = compare.Variant

IDEAL_IO_RPS = 64 / 0.020  # 64 connections, each request sleeps 20 ms

# --------------------------------------------------------------------------
# apps (written to a temp dir, which becomes the servers' cwd)
# --------------------------------------------------------------------------

APP_SOURCES = {
    "wc_hello_wsgi.py": '''
        BODY = b"Hello, World!"
        HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


        def app(environ, start_response):
            start_response("200 OK", HEADERS)
            return [BODY]
        ''',
    "wc_sleep_wsgi.py": '''
        import time

        BODY = b"OK"
        HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


        def app(environ, start_response):
            time.sleep(0.020)
            start_response("200 OK", HEADERS)
            return [BODY]
        ''',
    "wc_cpu_wsgi.py": '''
        import os

        ITERS = int(os.environ.get("WC_CPU_ITERS", "60000"))
        HEADERS = [("Content-Type", "text/plain")]


        def burn(n):
            acc = 0
            for i in range(n):
                acc = (acc + i * i) % 1000003
            return acc


        def app(environ, start_response):
            body = str(burn(ITERS)).encode()
            start_response("200 OK", HEADERS + [("Content-Length", str(len(body)))])
            return [body]
        ''',
    "wc_hello_asgi.py": '''
        BODY = b"Hello, World!"
        START = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]}
        BODY_MSG = {"type": "http.response.body", "body": BODY}


        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            await send(START)
            await send(BODY_MSG)
        ''',
}


def write_apps(directory):
    for name, src in APP_SOURCES.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(textwrap.dedent(src).lstrip())


def calibrate_cpu_iters(target_s=0.002):
    """Loop count for ~target_s of pure Python, measured here once, passed to every server."""
    ns = {}
    exec(textwrap.dedent(APP_SOURCES["wc_cpu_wsgi.py"]), ns)
    burn = ns["burn"]
    n = 20000
    best = None
    for _ in range(7):
        t0 = time.perf_counter()
        burn(n)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return max(1000, int(n * target_s / best))


def has_module(name):
    try:
        p = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------


def _fc(*extra):
    return lambda p, w, m: ["ferrocorn", "-b", f"127.0.0.1:{p}", "-w", str(w), *extra, f"{m}:app"]


def _gu(*extra):
    return lambda p, w, m: ["gunicorn", "-b", f"127.0.0.1:{p}", "-w", str(w), *extra, f"{m}:app"]


def _granian(interface, *extra):
    return lambda p, w, m: ["granian", "--interface", interface, "--host", "127.0.0.1", "--port", str(p),
                            "--workers", str(w), *extra, f"{m}:app"]


def scenarios(tools):
    uv_http = "httptools" if tools["httptools"] else "h11"
    uv_note = "" if tools["httptools"] else " (httptools not installed)"
    if tools["uvicorn_worker"]:
        gu_asgi = Variant("gunicorn-uvicorn", "gunicorn", "-k uvicorn.workers.UvicornWorker -w {w}",
                          _gu("-k", "uvicorn.workers.UvicornWorker"))
    else:
        gu_asgi = Variant("gunicorn-asgi", "gunicorn", "-k asgi -w {w} (uvicorn worker unavailable)",
                          _gu("-k", "asgi"))
    return {
        "io": {
            "title": "I/O-bound: WSGI app sleeping 20 ms per request",
            "module": "wc_sleep_wsgi", "connections": 64, "wrk_timeout": 10,
            "variants": [
                Variant("ferrocorn", "ferrocorn", "-k gevent --worker-connections 1000 -w {w}",
                        _fc("-k", "gevent", "--worker-connections", "1000")),
                Variant("gunicorn", "gunicorn", "-k gevent --worker-connections 1000 -w {w}",
                        _gu("-k", "gevent", "--worker-connections", "1000")),
                Variant("granian", "granian", "wsgi --workers {w} (default blocking threads)",
                        _granian("wsgi")),
            ],
        },
        "asgi": {
            "title": "ASGI hello: raw ASGI app, 13-byte body",
            "module": "wc_hello_asgi", "connections": 64, "wrk_timeout": None,
            "variants": [
                Variant("ferrocorn", "ferrocorn", "-k asgi -w {w}", _fc("-k", "asgi")),
                Variant("granian", "granian", "asgi --workers {w}", _granian("asgi")),
                Variant("uvicorn", "uvicorn",
                        f"--http {uv_http} --loop uvloop --workers {{w}} --no-access-log{uv_note}",
                        lambda p, w, m: ["uvicorn", "--host", "127.0.0.1", "--port", str(p), "--http", uv_http,
                                         "--loop", "uvloop", "--workers", str(w), "--no-access-log", f"{m}:app"]),
                gu_asgi,
            ],
        },
        "cpu": {
            "title": "CPU-bound: ~2 ms pure-Python loop per request",
            "module": "wc_cpu_wsgi", "connections": 16, "wrk_timeout": 10,
            "variants": [
                Variant("ferrocorn", "ferrocorn", "sync -w {w}", _fc("-k", "sync")),
                Variant("gunicorn", "gunicorn", "sync -w {w}", _gu("-k", "sync")),
            ],
        },
        "gthread": {
            "title": "hello world, threaded WSGI",
            "module": "wc_hello_wsgi", "connections": 64, "wrk_timeout": None,
            "variants": [
                Variant("ferrocorn", "ferrocorn", "-k gthread --threads 4 -w {w}",
                        _fc("-k", "gthread", "--threads", "4")),
                Variant("granian", "granian", "wsgi --workers {w} (default blocking threads)",
                        _granian("wsgi")),
                # granian tuned for this app (one Python thread: no GIL hand-offs); the target
                # is against the default above, this row keeps the comparison honest.
                Variant("granian-bt1", "granian", "wsgi --workers {w} --blocking-threads 1",
                        _granian("wsgi", "--blocking-threads", "1")),
            ],
        },
    }


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


def measure(variant, name, scen, args, env, logdir, seq):
    """compare.measure with this scenario's -c (and wrk --timeout); exit messages saying
    "not supported" turn the row into "unsupported"."""
    margs = copy.copy(args)
    margs.connections = scen["connections"]
    row = compare.measure(variant, name, scen["module"], margs, env, logdir, seq,
                          wrk_timeout=scen["wrk_timeout"])
    if row["status"] != "ok" and re.search(r"not supported|unsupported|not implemented", row.get("error", ""), re.I):
        row["status"] = "unsupported"
    return row


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def find(rows, key):
    return next((r for r in rows if r["key"] == key and r["status"] == "ok"), None)


def ratio_text(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def table(name, scen, rows):
    extra = {"io": "of ideal 3200", "asgi": "ferrocorn ÷ row", "cpu": "p99 ÷ gunicorn",
             "gthread": "ferrocorn ÷ row"}[name]
    out = [f"### {scen['title']} (`-c{scen['connections']}`)", "",
           f"| server | config | RPS | p50 ms | p99 ms | errors | server µs CPU/req | server CPU "
           f"| other CPU | {extra} | notes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    fc = find(rows, "ferrocorn")
    gu = find(rows, "gunicorn")
    for r in rows:
        if r["status"] != "ok":
            out.append(compare.failed_row(r, 7))
            continue
        if name == "io":
            x = fmt(r["rps"] / IDEAL_IO_RPS * 100, ".0f", "%")
        elif name == "cpu":
            x = fmt(ratio_text(r["p99"], gu["p99"]) if gu else None, ".2f", "×")
        else:
            x = "—" if r["key"] == "ferrocorn" else fmt(ratio_text(fc["rps"], r["rps"]) if fc else None, ".2f", "×")
        out.append(
            f"| {r['server']} | {r['config']} | {r['rps']:,.0f} | {fmt(r['p50'], '.2f')} | {fmt(r['p99'], '.2f')} "
            f"| {r['errors']} | {fmt(r['us_per_req'], '.1f')} | {fmt(r['srv_cpu_pct'], '.0f', '%')} "
            f"| {fmt(r['other_pct'], '.0f', '%')} | {x} | {'; '.join(r['notes'])} |")
    return "\n".join(out)


def verdict(ok):
    return "met" if ok else "**NOT met**"


def summaries(name, rows, workers):
    fc = find(rows, "ferrocorn")
    fc_any = next((r for r in rows if r["key"] == "ferrocorn"), None)
    lines = []
    if fc is None:
        status = fc_any["status"] if fc_any else "not run"
        return [f"- {name}: ferrocorn {status}; no ratio"]
    if name == "io":
        parts = []
        for r in rows:
            if r["status"] == "ok":
                parts.append(f"{r['server']} {r['rps'] / IDEAL_IO_RPS * 100:.0f}% of ideal")
            else:
                parts.append(f"{r['server']} {r['status']}")
        gu = find(rows, "gunicorn")
        line = "- io (20 ms sleep, -c64): " + ", ".join(parts)
        if gu:
            line += f"; ferrocorn/gunicorn gevent RPS {fc['rps'] / gu['rps']:.2f}×"
        lines.append(line)
    elif name == "asgi":
        gr = find(rows, "granian")
        uv = find(rows, "uvicorn")
        if gr:
            rr = fc["rps"] / gr["rps"]
            lines.append(f"- asgi hello: ferrocorn/granian {rr:.2f}× (target ≥ 1.1×: {verdict(rr >= 1.1)})")
        else:
            lines.append("- asgi hello: ferrocorn/granian n/a (granian row missing)")
        if uv:
            rr = fc["rps"] / uv["rps"]
            lines.append(f"- asgi hello: ferrocorn/uvicorn {rr:.2f}× (target ≥ 1.8×: {verdict(rr >= 1.8)})"
                         + against_best_round(fc, uv, "uvicorn"))
        else:
            lines.append("- asgi hello: ferrocorn/uvicorn n/a (uvicorn row missing)")
    elif name == "cpu":
        gu = find(rows, "gunicorn")
        if gu and fc["p99"] is not None and gu["p99"] is not None:
            rr = fc["p99"] / gu["p99"]
            lines.append(f"- cpu-bound: p99 ferrocorn {fc['p99']:.2f} ms vs gunicorn {gu['p99']:.2f} ms = {rr:.2f}× "
                         f"(target ≤ 1.00×, no worse: {verdict(rr <= 1.0)})")
        else:
            lines.append("- cpu-bound: p99 comparison n/a")
    elif name == "gthread":
        gr = find(rows, "granian")
        if gr:
            rr = fc["rps"] / gr["rps"]
            lines.append(f"- gthread hello: ferrocorn/granian {rr:.2f}× (target ≥ 1.3×: {verdict(rr >= 1.3)})"
                         + against_best_round(fc, gr, "granian"))
        else:
            lines.append("- gthread hello: ferrocorn/granian n/a")
        tuned = find(rows, "granian-bt1")
        if tuned:
            lines.append(f"- gthread hello: ferrocorn/granian --blocking-threads 1 "
                         f"{fc['rps'] / tuned['rps']:.2f}× (reference, no target)")
    if workers != 2:
        lines = [ln + f" [targets are for 2 workers each; this run used {workers}]" for ln in lines]
    return lines


def against_best_round(fc, peer, name):
    """With several rounds: ferrocorn's median against the peer's fastest round, a check that
    does not depend on which of its speeds a bimodal peer (granian's default WSGI) landed in."""
    rounds = peer.get("rps_rounds") or []
    if len(rounds) < 2:
        return ""
    return f"; against {name}'s best round {fc['rps'] / max(rounds):.2f}×"


def header(args, tools, cpu_iters):
    hargs = copy.copy(args)
    hargs.connections = "64 (cpu: 16)"
    hargs.repeat = args.rounds
    head = compare.header(hargs).replace("## ferrocorn benchmark", "## ferrocorn worker classes benchmark")
    vers = ", ".join(f"{p}: {compare.pkg_version(p)}" for p in ("gevent", "uvicorn", "uvloop", "httptools"))
    return (head + f"\n- {vers}; gunicorn ASGI row: "
            f"{'uvicorn.workers.UvicornWorker' if tools['uvicorn_worker'] else 'gunicorn -k asgi'}"
            f"\n- cpu app: {cpu_iters} loop iterations per request (~2 ms, calibrated once here)")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=8, help="measured wrk seconds (8)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up seconds (2)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; median per row, order alternates")
    ap.add_argument("--workers", type=int, default=2, help="workers per server (2)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    ap.add_argument("--scenarios", default="io,asgi,cpu,gthread")
    compare.add_run_args(ap)
    compare.add_baseline_arg(ap)
    args = ap.parse_args()

    compare.require_wrk()
    tools = {"httptools": has_module("httptools"), "uvicorn_worker": has_module("uvicorn.workers")}
    all_scen = scenarios(tools)
    for scen in all_scen.values():
        scen["variants"] = compare.with_baseline(scen["variants"], args.baseline_ferrocorn)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for n in names:
        if n not in all_scen:
            raise SystemExit(f"unknown scenario {n!r} (known: {', '.join(all_scen)})")

    cpu_iters = calibrate_cpu_iters()
    ws = compare.Workspace("ferrocorn-wc-bench-", WC_CPU_ITERS=str(cpu_iters))
    env, logdir = ws.env, ws.logdir
    apps_dir = os.path.join(ws.tmp, "apps")
    os.makedirs(apps_dir)
    write_apps(apps_dir)
    compare.APPS_DIR = apps_dir  # compare.Server starts every server with this cwd

    head = header(args, tools, cpu_iters)
    log(head)
    results = {n: {v.key: [] for v in all_scen[n]["variants"]} for n in names}
    seq = 0
    try:
        for rnd in range(args.rounds):
            for n in names:
                scen = all_scen[n]
                order = compare.round_order(scen["variants"], rnd)
                for v in order:
                    seq += 1
                    log(f"[round {rnd + 1}/{args.rounds}] {n} / {v.key}")
                    row = measure(v, n, scen, args, env, logdir, seq)
                    compare.log_row(row)
                    results[n][v.key].append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    parts = [head, ""]
    summ = []
    for n in names:
        scen = all_scen[n]
        rows = [compare.merge_rounds(results[n][v.key]) for v in scen["variants"] if results[n][v.key]]
        if not rows:
            continue
        parts += [table(n, scen, rows), ""]
        summ += summaries(n, rows, args.workers)
    if summ:
        parts += ["Targets:", ""] + summ + [""]
    report = "\n".join(parts)
    compare.emit(report, args.out)


if __name__ == "__main__":
    main()
