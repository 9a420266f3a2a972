#!/usr/bin/env python3
"""Large uploads: throughput and worker memory, ferrocorn vs gunicorn sync vs granian.

Usage (from the repository root)::

    python benches/uploads.py [--size-mib 4] [--connections 4] [--duration 6] [--rounds 2]
        [--workers 2] [--out FILE.md]

Each request POSTs a ``--size-mib`` body to ``benches/apps/upload_app.py``, which reads it
from ``wsgi.input`` in 64 KiB pieces. Rows: ferrocorn with its defaults (bodies over
``--body-buffer-size``, 1 MiB, spooled to a temporary file), ferrocorn keeping every body in
memory (``--body-buffer-size`` above the body), gunicorn sync (reads the socket as the app
reads), granian. Besides RPS and CPU per request, the report gives each server's peak memory:
the largest VmHWM of any of its processes after the run, which shows whether bodies were held
in memory whole. Rounds alternate the server order; the median per row is reported. Idle wait,
server start/stop by PID, /proc accounting and wrk parsing come from ``compare.py``.
Standard library; Linux only.
"""

import argparse
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

MODULE = "upload_app"
fmt = compare.fmt
log = compare.log


def variants(body_bytes):
    in_memory = str(2 * body_bytes)
    return [
        compare.Variant(
            "ferrocorn", "ferrocorn", "-w {w} (bodies over 1 MiB spooled)",
            lambda p, w, m: ["ferrocorn", "-b", f"127.0.0.1:{p}", "-w", str(w), f"{m}:app"]),
        compare.Variant(
            "ferrocorn-memory", "ferrocorn", f"-w {{w}} --body-buffer-size {in_memory}",
            lambda p, w, m: ["ferrocorn", "-b", f"127.0.0.1:{p}", "-w", str(w),
                             "--body-buffer-size", in_memory, f"{m}:app"]),
        compare.Variant(
            "gunicorn-sync", "gunicorn", "sync -w {w}",
            lambda p, w, m: ["gunicorn", "-b", f"127.0.0.1:{p}", "-w", str(w), f"{m}:app"]),
        compare.Variant(
            "granian", "granian", "wsgi --workers {w}",
            lambda p, w, m: ["granian", "--interface", "wsgi", "--host", "127.0.0.1",
                             "--port", str(p), "--workers", str(w), f"{m}:app"]),
    ]


def write_post_script(directory, body_bytes):
    """A wrk Lua script that POSTs ``body_bytes`` bytes on every request."""
    path = os.path.join(directory, "post.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                f'wrk.body = string.rep("x", {body_bytes})\n')
    return path


def answer_check(body_bytes):
    """A ``compare.measure`` check: one upload must come back counted in full."""
    def check(url):
        req = urllib.request.Request(url, data=b"x" * body_bytes, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                got = resp.read().decode()
        except Exception as e:  # an error status, a reset, a timeout
            return f"upload failed: {e}"
        return None if got == str(body_bytes) else f"the app read {got} of {body_bytes} bytes"
    return check


def table(rows, size_mib):
    ours = next((r for r in rows if r["key"] == "ferrocorn" and r["status"] == "ok"), None)
    out = [f"### {size_mib:g} MiB uploads", "",
           "| server | config | RPS | MiB/s | p99 ms | errors | server µs CPU/req | peak memory "
           "of one process | ferrocorn ÷ row | notes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            out.append(compare.failed_row(r, 6))
            continue
        ratio = "—" if r["key"] == "ferrocorn" or ours is None else fmt(ours["rps"] / r["rps"], ".2f", "×")
        out.append(
            f"| {r['server']} | {r['config']} | {r['rps']:,.0f} | {r['rps'] * size_mib:,.0f} "
            f"| {fmt(r['p99'], '.2f')} | {r['errors']} | {fmt(r['us_per_req'], '.0f')} "
            f"| {fmt(r.get('peak_rss_mib'), '.0f', ' MiB')} | {ratio} | {'; '.join(r['notes'])} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=float, default=4.0, help="body size per request (4)")
    compare.add_load_args(ap, connections=4)
    compare.add_run_args(ap)
    args = ap.parse_args()
    compare.require_wrk()

    body_bytes = int(args.size_mib * 1024 * 1024)
    ws = compare.Workspace("ferrocorn-upload-bench-")
    script = write_post_script(ws.tmp, body_bytes)

    def measure_one(v, seq):
        return compare.measure(v, "upload", MODULE, args, ws.env, ws.logdir, seq, wrk_timeout=30,
                               wrk_script=script, check=answer_check(body_bytes))

    rows = compare.run_rounds(variants(body_bytes), args.rounds, measure_one, ws, args.keep_logs)
    head = compare.titled_header(args, "upload")
    compare.emit("\n".join([head, "", table(rows, args.size_mib), ""]), args.out)


if __name__ == "__main__":
    main()
