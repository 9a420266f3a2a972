#!/usr/bin/env python3
"""Streamed responses: many small chunks per response, every worker class against its peers.

Usage (from the repository root)::

    python benches/streaming.py [--chunks 1024] [--chunk-bytes 1024] [--connections 8]
        [--duration 6] [--rounds 2] [--workers 2] [--out FILE.md]

Each request gets ``--chunks`` chunks of ``--chunk-bytes`` from ``benches/apps/stream_app.py``
(a WSGI generator / ASGI ``more_body`` messages; 1 MiB per response by default), framed chunked.
Rows: ferrocorn sync, gthread, gevent and asgi; gunicorn sync, gthread and gevent; granian wsgi
and asgi; uvicorn (httptools, uvloop). The summary gives each ferrocorn class against the
peers running the same kind of app in the same run. Rounds alternate the server order; the
median per row is reported. Before the load each server must deliver one whole response (a
server that cuts streams short cannot look fast). Idle wait, start/stop by PID, /proc
accounting and wrk parsing come from ``compare.py``. Standard library; Linux only.
"""

import argparse
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

MODULE = "stream_app"
fmt = compare.fmt
log = compare.log


def _ferrocorn(*extra, asgi=False):
    return lambda p, w, m: ["ferrocorn", "-b", f"127.0.0.1:{p}", "-w", str(w), *extra,
                            f"{m}:{'asgi_app' if asgi else 'app'}"]


def _gunicorn(*extra):
    return lambda p, w, m: ["gunicorn", "-b", f"127.0.0.1:{p}", "-w", str(w), *extra, f"{m}:app"]


def _granian(interface):
    target = "asgi_app" if interface == "asgi" else "app"
    return lambda p, w, m: ["granian", "--interface", interface, "--host", "127.0.0.1",
                            "--port", str(p), "--workers", str(w), f"{m}:{target}"]


VARIANTS = [
    compare.Variant("ferrocorn-sync", "ferrocorn", "sync -w {w}", _ferrocorn()),
    compare.Variant("ferrocorn-gthread", "ferrocorn", "gthread --threads 4 -w {w}",
                    _ferrocorn("-k", "gthread", "--threads", "4")),
    compare.Variant("ferrocorn-gevent", "ferrocorn", "gevent -w {w}", _ferrocorn("-k", "gevent")),
    compare.Variant("ferrocorn-asgi", "ferrocorn", "asgi -w {w}", _ferrocorn("-k", "asgi", asgi=True)),
    compare.Variant("gunicorn-sync", "gunicorn", "sync -w {w}", _gunicorn()),
    compare.Variant("gunicorn-gthread", "gunicorn", "gthread --threads 4 -w {w}",
                    _gunicorn("-k", "gthread", "--threads", "4")),
    compare.Variant("gunicorn-gevent", "gunicorn", "gevent -w {w}", _gunicorn("-k", "gevent")),
    compare.Variant("granian-wsgi", "granian", "wsgi --workers {w}", _granian("wsgi")),
    compare.Variant("granian-asgi", "granian", "asgi --workers {w}", _granian("asgi")),
    compare.Variant("uvicorn", "uvicorn", "httptools, uvloop, --workers {w}",
                    lambda p, w, m: ["uvicorn", "--host", "127.0.0.1", "--port", str(p),
                                     "--workers", str(w), "--http", "httptools", "--loop", "uvloop",
                                     "--log-level", "warning", "--no-access-log", f"{m}:asgi_app"]),
]

# Each ferrocorn class against the peers that run the same kind of app.
PEERS = {
    "ferrocorn-sync": ["gunicorn-sync", "granian-wsgi"],
    "ferrocorn-gthread": ["gunicorn-gthread", "granian-wsgi"],
    "ferrocorn-gevent": ["gunicorn-gevent", "granian-wsgi"],
    "ferrocorn-asgi": ["uvicorn", "granian-asgi"],
}


def whole_response_check(expected_bytes):
    """A ``compare.measure`` check: one response must arrive whole."""
    def check(url):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                got = len(resp.read())
        except Exception as e:  # an error status, a reset, a cut stream
            return f"stream failed: {e}"
        return None if got == expected_bytes else f"got {got} of {expected_bytes} bytes"
    return check


def table(rows, mib_per_response):
    out = ["| server | config | responses/s | MiB/s | p99 ms | errors | server µs CPU/response "
           "| notes |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(compare.failed_row(r, 4))
            continue
        out.append(
            f"| {r['server']} | {r['config']} | {r['rps']:,.0f} | {r['rps'] * mib_per_response:,.0f} "
            f"| {fmt(r['p99'], '.2f')} | {r['errors']} | {fmt(r['us_per_req'], '.0f')} "
            f"| {'; '.join(r['notes'])} |")
    return "\n".join(out)


def summary(rows):
    by_key = {r["key"]: r for r in rows if r["status"] == "ok"}
    lines = []
    for ours, peers in PEERS.items():
        if ours not in by_key:
            lines.append(f"- {ours}: not measured")
            continue
        ratios = [f"{by_key[ours]['rps'] / by_key[p]['rps']:.2f}× {p}" for p in peers if p in by_key]
        lines.append(f"- {ours}: " + (", ".join(ratios) or "no peer measured"))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=1024, help="chunks per response (1024)")
    ap.add_argument("--chunk-bytes", type=int, default=1024, help="bytes per chunk (1024)")
    ap.add_argument("--only", default="", help="comma-separated row keys to run (all)")
    compare.add_load_args(ap, connections=8)
    compare.add_run_args(ap)
    args = ap.parse_args()
    compare.require_wrk()

    chosen = [v for v in VARIANTS if not args.only or v.key in args.only.split(",")]
    response_bytes = args.chunks * args.chunk_bytes
    ws = compare.Workspace("ferrocorn-stream-bench-", STREAM_CHUNKS=str(args.chunks),
                           STREAM_CHUNK_BYTES=str(args.chunk_bytes))

    def measure_one(v, seq):
        return compare.measure(v, "stream", MODULE, args, ws.env, ws.logdir, seq, wrk_timeout=30,
                               check=whole_response_check(response_bytes))

    rows = compare.run_rounds(chosen, args.rounds, measure_one, ws, args.keep_logs)
    mib = response_bytes / (1 << 20)
    title = f"### {args.chunks} chunks × {args.chunk_bytes} bytes per response ({mib:g} MiB)"
    head = compare.titled_header(args, "streaming")
    compare.emit("\n".join([head, "", title, "", table(rows, mib), "", summary(rows), ""]), args.out)


if __name__ == "__main__":
    main()
