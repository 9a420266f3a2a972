#!/usr/bin/env python3
"""Sweep the worker count: ferrocorn vs gunicorn sync, on a CPU-light and a sleeping app.

Usage (from the repository root)::

    python benches/workers_sweep.py [--workers 1,2,4,8] [--apps hello,sleep]
        [--duration 10] [--warmup 2] [--connections 64] [--threads 2]
        [--repeat 1] [--out FILE.md]

For every app and every worker count N, the script runs ``ferrocorn -w N`` and
``gunicorn -w N`` (sync) one after the other, with ``wrk -t2 -cC --latency`` on
``GET /``, and prints one markdown table per app with both servers side by side
and the ferrocorn/gunicorn RPS ratio per row.

Apps (in ``benches/apps``): ``hello`` = ``hello:app`` (13-byte body, no work),
``sleep`` = ``sleep_app:app`` (``time.sleep(0.02)`` then 200). A sync worker runs
one request at a time, so on ``sleep`` both servers should reach about
N / 20 ms = 50·N RPS; that expectation is printed next to the sleep rows.

Everything else (idle wait, start/stop by PID, CPU accounting from /proc, wrk
parsing) is ``compare.py``'s, imported as a module. Standard library; Linux only.
"""

import argparse
import copy
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

APPS = {
    # name -> (module in benches/apps, seconds a sync worker is busy per request or None)
    "hello": ("hello", None),
    "sleep": ("sleep_app", 0.020),
}

SERVERS = ("ferrocorn", "gunicorn-sync")

log = compare.log
fmt = compare.fmt


def measure(variant, app, workers, args, env, logdir, seq):
    """One cell: compare.measure with two things the sleeping app needs:

    * after the warm-up, wait until the server has drained the requests wrk left in flight
      (with C connections and N workers busy B s each, up to C·B/N seconds of queued work,
      which would otherwise be served inside the measured window);
    * wrk ``--timeout`` well above the expected queueing delay C·B/N (wrk's default is 2 s,
      and 64 connections on 1 worker of the sleep app already wait ~1.3 s).
    """
    module, busy_s = APPS[app]
    backlog_s = args.connections * (busy_s or 0.0) / workers
    wrk_timeout = max(2, int(backlog_s * 3 + 2))
    return compare.measure(variant, app, module, args, env, logdir, seq, workers=workers,
                           wrk_timeout=wrk_timeout, drain_s=backlog_s + 0.3)


def parse_workers(text):
    try:
        ws = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--workers: expected a comma-separated list of integers, got {text!r}")
    if not ws or any(w < 1 for w in ws):
        raise SystemExit("--workers: every worker count must be >= 1")
    return ws


def header(args, workers):
    ns = copy.copy(args)
    ns.workers = ",".join(map(str, workers))
    lines = compare.header(ns).splitlines()
    lines[0] = lines[0].replace("ferrocorn benchmark", "ferrocorn workers sweep")
    lines[-1] = (f"- load: `wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
                 f"--latency` on `GET /` after a {args.warmup} s warm-up; workers "
                 f"{', '.join(map(str, workers))}; servers `ferrocorn -w N` and "
                 f"`gunicorn -w N` (sync); {args.repeat} round(s)"
                 + (" (median per cell, server order alternating)" if args.repeat > 1 else ""))
    return "\n".join(lines)


def pair(fc, gu, key, spec):
    """'a / b' for one metric of the ferrocorn and gunicorn rows."""
    def one(r):
        if r is None or r["status"] != "ok":
            return "—"
        return fmt(r.get(key), spec)
    return f"{one(fc)} / {one(gu)}"


def status_note(name, r):
    if r is None:
        return f"{name}: not run"
    if r["status"] != "ok":
        return f"{name} **{r['status']}**: {r.get('error', '')[:300]}"
    notes = [n for n in r["notes"]]
    return f"{name}: {'; '.join(notes)}" if notes else ""


def table(app, busy_s, workers, cells, args):
    out = [f"### {app} (`{APPS[app][0]}:app`)", ""]
    if busy_s is not None:
        out += [f"Expectation: a sync worker is busy {busy_s * 1000:.0f} ms per request, so "
                f"throughput ≈ workers / {busy_s * 1000:.0f} ms = {1 / busy_s:.0f}·N RPS for "
                f"both servers (while {args.connections} connections ≥ N keep every worker "
                "busy).", ""]
    cols = ["workers", "ferrocorn RPS", "gunicorn RPS", "ferrocorn/gunicorn",
            "p50 ms (fc / gu)", "p99 ms (fc / gu)", "server µs CPU/req (fc / gu)",
            "errors (fc / gu)", "other CPU (fc / gu)"]
    if busy_s is not None:
        cols.append("expected RPS (N / 20 ms)")
    cols.append("notes")
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join("---:" if c not in ("notes",) else "---" for c in cols) + "|")
    for w in workers:
        fc = cells.get((app, w, "ferrocorn"))
        gu = cells.get((app, w, "gunicorn-sync"))
        ok_fc = fc is not None and fc["status"] == "ok"
        ok_gu = gu is not None and gu["status"] == "ok"
        ratio = fc["rps"] / gu["rps"] if ok_fc and ok_gu and gu["rps"] else None
        cells_txt = [
            str(w),
            f"{fc['rps']:,.0f}" if ok_fc else f"**{fc['status'] if fc else 'not run'}**",
            f"{gu['rps']:,.0f}" if ok_gu else f"**{gu['status'] if gu else 'not run'}**",
            fmt(ratio, ".2f", "×"),
            pair(fc, gu, "p50", ".2f"),
            pair(fc, gu, "p99", ".2f"),
            pair(fc, gu, "us_per_req", ".1f"),
            pair(fc, gu, "errors", "d"),
            f"{fmt(fc.get('other_pct') if ok_fc else None, '.0f', '%')} / "
            f"{fmt(gu.get('other_pct') if ok_gu else None, '.0f', '%')}",
        ]
        if busy_s is not None:
            exp = w / busy_s
            got = []
            for name, r, ok in (("fc", fc, ok_fc), ("gu", gu, ok_gu)):
                if ok:
                    got.append(f"{name} {100 * r['rps'] / exp:.0f}%")
            cells_txt.append(f"≈ {exp:,.0f}" + (f" ({', '.join(got)} of it)" if got else ""))
        notes = [n for n in (status_note("ferrocorn", fc), status_note("gunicorn", gu)) if n]
        cells_txt.append("; ".join(notes).replace("|", "/").replace("\n", " "))
        out.append("| " + " | ".join(cells_txt) + " |")
    return "\n".join(out)


NOTES = """Notes:

- Each cell is `wrk -t{t} -c{c}` against one server at a time; p50/p99 are wrk's latency
  percentiles; server µs CPU/req is the CPU time of the server's whole process tree during the
  measured run divided by the requests wrk completed (see benches/README.md, "Columns").
- gunicorn's sync worker closes the connection after every response, so wrk reconnects for every
  request against gunicorn; ferrocorn keeps connections alive.
- ferrocorn: an idle keep-alive connection stays on the worker that accepted it, and wrk opens
  all {c} connections at once, while every worker is still idle, so they can spread unevenly over
  the workers. On `sleep` that shows as a low p50 with a high p99 (crowded workers queue their
  connections) and, with many workers, throughput below N / 20 ms (a worker holding no
  connection sits idle). gunicorn gets a fresh connection per request, so it has no such skew.
- wrk runs with `--timeout` above the expected queueing delay (its 2 s default is too close to
  the ~{c} × 20 ms that requests wait with 1 worker on `sleep`), and after the warm-up the
  script waits until the requests the warm-up left queued have been served.
- On `sleep`, a sync worker is occupied for 20 ms per request, so with {c} connections the
  throughput of both servers is bounded by N / 20 ms and the latency by about {c} / N × 20 ms.
  Worker counts above the core count ({ncpu}) still help there, because sleeping workers use no CPU.
- A shared, noisy box: read ratios within one table, and use `--repeat 3` before trusting a
  difference under ~10–20 %. Short runs (`--duration 3`) are smoke tests only.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4,8", help="worker counts to sweep (1,2,4,8)")
    ap.add_argument("--apps", default="hello,sleep", help="apps: hello, sleep (hello,sleep)")
    ap.add_argument("--duration", type=int, default=10, help="measurement seconds (10)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up seconds (2)")
    ap.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (2)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; median per cell (1)")
    compare.add_run_args(ap)
    args = ap.parse_args()

    compare.require_wrk()
    workers = parse_workers(args.workers)
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    for a in apps:
        if a not in APPS:
            raise SystemExit(f"unknown app {a!r} (known: {', '.join(APPS)})")
    variants = [compare.server_variants(s)[0] for s in SERVERS]

    ws = compare.Workspace("ferrocorn-sweep-")
    env, logdir = ws.env, ws.logdir

    head = header(args, workers)
    log(head)
    runs = {}   # (app, workers, server key) -> [row per round]
    seq = 0
    try:
        for rnd in range(args.repeat):
            order = compare.round_order(variants, rnd)
            for app in apps:
                for w in workers:
                    for v in order:
                        seq += 1
                        log(f"[round {rnd + 1}/{args.repeat}] {app} / -w {w} / {v.key}")
                        row = measure(v, app, w, args, env, logdir, seq)
                        compare.log_row(row)
                        runs.setdefault((app, w, v.key), []).append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    cells = {k: compare.merge_rounds(v) for k, v in runs.items()}
    parts = [head, ""]
    for app in apps:
        if any(k[0] == app for k in cells):
            parts += [table(app, APPS[app][1], workers, cells, args), ""]
    parts.append(NOTES.format(t=args.threads, c=args.connections, ncpu=os.cpu_count()))
    report = "\n".join(parts)
    compare.emit(report, args.out)


if __name__ == "__main__":
    main()
