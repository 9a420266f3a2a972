#!/usr/bin/env python3
"""Soak: a million requests against one worker of each class, its memory sampled throughout;
the slope of its RSS after warm-up says whether anything accumulates per request.

Usage (from the repository root)::

    python benches/soak.py [--requests 1000000] [--classes sync,gthread,gevent,asgi] [--out F]

For each class: ``ferrocorn -w 1 -k CLASS`` serving the 13-byte hello of ``benches/apps``
(``hello.py``, or ``hello_asgi.py`` for asgi),
``ferrocorn bench -n REQUESTS -c 32`` against it (keep-alive, plus every tenth connection
opened anew by a second client with ``--no-keepalive`` so accept and close paths soak too;
``--churn`` sets the share),
and the worker's VmRSS read from /proc every 0.5 s. The first 10 % of the samples are the
warm-up (allocator pools, interned strings, the app's first imports); over the rest a
least-squares line gives the slope, reported in KiB per 100,000 requests, beside the RSS at
the end of the warm-up and at the end, and the slope of the last half alone (growth that levels off — allocator pools
filling — is near zero there; a leak keeps its slope). A slope under 16 KiB per 100k
requests (a 160-byte leak per thousand requests would show as 16), over the whole steady
part or its last half, counts as flat.

Bounded: the bench stops after its requests (at most ``--max-seconds`` each); the server is
stopped by PID. Standard library only; Linux only.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

log = compare.log

FLAT_KIB_PER_100K = 16.0


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def soak_one(klass, args, env, logdir):
    port = compare.free_port()
    module = "hello_asgi:app" if klass == "asgi" else "hello:app"  # benches/apps
    argv = ["ferrocorn", "-b", f"127.0.0.1:{port}", "-w", "1", "-k", klass, module]
    if klass == "gthread":
        argv[-1:-1] = ["--threads", "4"]
    srv = compare.Server(argv, env, logdir, f"soak-{klass}")
    try:
        srv.start()
        err = srv.wait_ready(port, 20)
        if err:
            return {"class": klass, "error": err}
        workers = [pid for pid, st in compare.all_procs().items() if st[0] == srv.proc.pid]
        if len(workers) != 1:
            return {"class": klass, "error": f"expected one worker, found {workers}"}
        worker = workers[0]
        url = f"http://127.0.0.1:{port}/"
        fresh = args.requests * args.churn // 100
        bench = subprocess.Popen(
            ["ferrocorn", "bench", "--json", "-n", str(args.requests - fresh), "-c", "32", "-t", "2",
             "-d", f"{args.max_seconds}s", url],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        churn = subprocess.Popen(
            ["ferrocorn", "bench", "--json", "-n", str(max(fresh, 1)), "-c", "4", "-t", "1",
             "--no-keepalive", "-d", f"{args.max_seconds}s", url],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        samples = []
        started = time.monotonic()
        while bench.poll() is None or churn.poll() is None:
            rss = compare.rss_kib(worker)
            if rss is None:
                break
            samples.append((time.monotonic() - started, rss))
            time.sleep(0.5)
        reports = []
        for proc in (bench, churn):
            out, _ = proc.communicate(timeout=30)
            try:
                reports.append(json.loads(out.decode().strip().splitlines()[-1]))
            except (ValueError, IndexError):
                reports.append({})
        elapsed = time.monotonic() - started
        done = sum(r.get("requests", 0) for r in reports)
        errors = sum(sum((r.get("errors") or {}).values()) for r in reports)
        if compare.rss_kib(worker) is None:
            return {"class": klass, "error": "the worker exited during the soak"}
        warm = max(1, len(samples) // 10)
        steady = samples[warm:]
        rate = done / elapsed if elapsed else 0
        # seconds -> requests: KiB per second / requests per second * 100k
        per_100k = slope(steady) / rate * 100_000 if rate else 0.0
        # the last half alone: growth that levels off (allocator pools filling) shows here as
        # a slope near zero; a leak keeps its slope
        last_half = slope(steady[len(steady) // 2:]) / rate * 100_000 if rate else 0.0
        return {
            "class": klass,
            "requests": done,
            "errors": errors,
            "seconds": elapsed,
            "rss_warm": steady[0][1] if steady else None,
            "rss_end": samples[-1][1] if samples else None,
            "rss_max": max(s for _, s in samples) if samples else None,
            "slope": per_100k,
            "slope_last_half": last_half,
            "samples": len(samples),
        }
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--classes", default="sync,gthread,gevent,asgi")
    ap.add_argument("--max-seconds", type=int, default=300, help="bound per class (300)")
    ap.add_argument("--churn", type=int, default=10,
                    help="percent of the requests sent on a new connection each (10)")
    ap.add_argument("--out")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    ws = compare.Workspace("ferrocorn-soak-")
    rows = []
    try:
        for klass in [c.strip() for c in args.classes.split(",") if c.strip()]:
            log(f"soaking {klass} with {args.requests:,} requests")
            rows.append(soak_one(klass, args, ws.env, ws.logdir))
            log(f"  {rows[-1]}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        ws.close(args.keep_logs)
    lines = [f"### Soak: {args.requests:,} requests per class, one worker, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| class | requests | errors | seconds | RSS after warm-up KiB | RSS at end KiB | "
             "max KiB | slope KiB/100k req | last half | flat |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    failed = False
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['class']} | — | — | — | — | — | — | — | — | {r['error']} |")
            failed = True
            continue
        flat = min(abs(r["slope"]), abs(r["slope_last_half"])) < FLAT_KIB_PER_100K and r["errors"] == 0
        failed |= not flat
        lines.append(f"| {r['class']} | {r['requests']:,} | {r['errors']} | {r['seconds']:.0f} | "
                     f"{r['rss_warm']:,} | {r['rss_end']:,} | {r['rss_max']:,} | {r['slope']:+.1f} | "
                     f"{r['slope_last_half']:+.1f} | "
                     f"{'yes' if flat else 'NO'} |")
    compare.emit("\n".join(lines), args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
