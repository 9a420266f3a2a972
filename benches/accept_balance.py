#!/usr/bin/env python3
"""Slow/fast mix: do fast requests wait behind slow ones? ferrocorn vs gunicorn sync.

Usage (from the repository root)::

    python benches/accept_balance.py [--workers 4] [--duration 10]
        [--slow-connections 2] [--fast-connections 8] [--out FILE.md]

App ``benches/apps/mixed_app.py``: ``GET /slow`` sleeps 200 ms (a long request that
occupies a sync worker), ``GET /fast`` returns at once. For each server (both
``-w 4`` by default, one after the other in the same run):

1. wait for an idle machine, start the server, wait for HTTP 200;
2. warm up with ``wrk`` on ``/fast``;
3. baseline: ``wrk -t1 -c8 --latency /fast`` alone (the fast requests' service time);
4. mix: start a background ``wrk -t1 -c2 --latency /slow`` (2 connections keep up to
   2 workers busy), wait ``--slow-lead`` s, then measure ``wrk -t1 -c8 --latency /fast``
   for ``--duration`` s while the slow load keeps running; then let the slow load end;
5. stop the server by PID.

It reports the fast requests' RPS, p50, p99 and max, the slow requests that completed,
and the fast p99 ratio gunicorn/ferrocorn. Idle wait, server start/stop, /proc CPU
accounting and wrk parsing come from ``compare.py`` (imported as a module).
Standard library; Linux only.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

MODULE = "mixed_app"
SLOW_S = 0.200          # must match benches/apps/mixed_app.py
SERVERS = ("ferrocorn", "gunicorn-sync")

log = compare.log
fmt = compare.fmt


def latency_max_ms(out):
    """wrk's 'Thread Stats' Latency line: Avg Stdev Max +/-Stdev -> Max in ms."""
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    return compare._ms(m.group(3)) if m else None


def wrk_result(out, rc):
    res = compare.parse_wrk(out)
    res["max"] = latency_max_ms(out)
    res["errors"] = res["socket_errors"] + res["non2xx"]
    res["ok"] = rc == 0 and res["rps"] is not None
    if not res["ok"]:
        res["error"] = " | ".join(out.strip().splitlines()[-3:]) or f"wrk exit {rc}"
    return res


class Background:
    """A wrk run in the background; output to a temp file; stopped by its own PID."""

    def __init__(self, argv):
        self.argv = argv
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def finish(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()        # Popen.kill -> SIGKILL to this PID only
            self.proc.wait()
        self.out.seek(0)
        text = self.out.read().decode("utf-8", "replace")
        self.out.close()
        return text, self.proc.returncode

    def abort(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def measure(variant, args, env, logdir, seq):
    row = {"key": variant.key, "server": variant.server,
           "config": variant.config.format(w=args.workers), "status": "ok", "notes": []}

    idle_ok, busy = compare.wait_for_idle(args.idle_threshold, args.idle_timeout)
    if not idle_ok:
        row["notes"].append(f"not idle ({busy:.0f}% busy)")
        log(f"  machine still {busy:.0f}% busy after {args.idle_timeout:.0f} s, going on")

    port = compare.free_port()
    argv = variant.argv_fn(port, args.workers, MODULE)
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        row["status"] = "failed to start"
        row["error"] = f"{argv[0]}: command not found"
        return row
    srv = compare.Server(argv, env, logdir, f"{seq:03d}-mixed-{variant.key}")
    log(f"  $ {' '.join(argv)}")
    slow = None
    try:
        srv.start()
        err = srv.wait_ready(port, args.start_timeout)
        if err is not None:
            detail = compare.first_lines(srv.err_path) or compare.first_lines(srv.out_path)
            row["status"] = "failed to start"
            row["error"] = f"{err}; stderr: {detail}" if detail else err
            return row
        fast_url = f"http://127.0.0.1:{port}/fast"
        slow_url = f"http://127.0.0.1:{port}/slow"
        fc = args.fast_connections

        if args.warmup > 0:
            compare.run_wrk(fast_url, 1, fc, args.warmup, False)
        if args.baseline > 0:
            out, _, rc = compare.run_wrk(fast_url, 1, fc, args.baseline, True)
            row["base"] = wrk_result(out, rc)
            time.sleep(0.3)

        # The slow load runs for lead + duration + 1 s, so it covers the whole fast window.
        slow_dur = args.slow_lead + args.duration + 1
        slow = Background(["wrk", "-t1", f"-c{args.slow_connections}", f"-d{slow_dur}s",
                           "--timeout=10s", "--latency", slow_url])
        time.sleep(args.slow_lead)

        before = srv.snapshot()
        sb0, _ = compare.sys_cpu()
        t0 = time.monotonic()
        out, wrk_cpu, rc = compare.run_wrk(fast_url, 1, fc, args.duration, True)
        wall = time.monotonic() - t0
        sb1, _ = compare.sys_cpu()
        after = srv.snapshot()

        slow_out, slow_rc = slow.finish(timeout=slow_dur + 15)
        slow = None
        alive = srv.proc.poll() is None

        fast = wrk_result(out, rc)
        row["fast"] = fast
        row["slow"] = s = wrk_result(slow_out, slow_rc)
        s["duration"] = slow_dur
        s["max_possible"] = int(args.slow_connections * slow_dur / SLOW_S)
        if not fast["ok"]:
            row["status"] = "wrk failed"
            row["error"] = "fast load: " + fast["error"]
            return row
        if not s["ok"]:
            row["notes"].append("slow load wrk failed: " + s["error"])
        srv_cpu = compare.tree_cpu_delta(before, after)
        # Other CPU over the fast window; the slow wrk's CPU is tiny (5 req/s per connection)
        # and lands here too.
        other = (sb1 - sb0) / compare.CLK_TCK - srv_cpu - wrk_cpu
        row["srv_cpu_pct"] = 100.0 * srv_cpu / wall
        row["other_pct"] = 100.0 * other / wall
        if not alive:
            row["notes"].append("server exited during run")
        if row["other_pct"] > args.noisy_threshold:
            row["notes"].append("noisy")
        return row
    finally:
        if slow is not None:
            slow.abort()
        srv.stop()


def header(args):
    ns = argparse.Namespace(threads=1, connections=args.fast_connections,
                            duration=args.duration, warmup=args.warmup,
                            workers=args.workers, repeat=1)
    lines = compare.header(ns).splitlines()
    lines[0] = lines[0].replace("ferrocorn benchmark", "ferrocorn accept balance (slow/fast mix)")
    lines[-1] = (
        f"- load: background `wrk -t1 -c{args.slow_connections} --latency /slow` "
        f"({SLOW_S * 1000:.0f} ms per request), started {args.slow_lead} s before and running "
        f"during the measured `wrk -t1 -c{args.fast_connections} -d{args.duration}s --latency "
        f"/fast`; baseline: the same fast load alone for {args.baseline} s; warm-up "
        f"{args.warmup} s; `-w {args.workers}` for both servers; app `{MODULE}:app`")
    return "\n".join(lines)


def table(rows, args):
    out = ["| server | config | fast RPS | fast p50 ms | fast p99 ms | fast max ms "
           "| fast errors | fast alone p50 / p99 / max ms | slow completed (max possible) "
           "| slow p50 / max ms | server CPU | other CPU | notes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] != "ok":
            note = r.get("error", "").replace("|", "/").replace("\n", " ")
            out.append(f"| {r['server']} | {r['config']} | **{r['status']}** "
                       f"| | | | | | | | | | {note[:400]} |")
            continue
        f, s, b = r["fast"], r["slow"], r.get("base")
        base = "—"
        if b is not None:
            base = (f"{fmt(b['p50'], '.2f')} / {fmt(b['p99'], '.2f')} / {fmt(b['max'], '.2f')}"
                    if b["ok"] else "wrk failed")
        slow_n = (f"{s['requests']:,} ({s['max_possible']:,})"
                  if s["ok"] and s["requests"] is not None else "—")
        slow_lat = f"{fmt(s['p50'], '.0f')} / {fmt(s['max'], '.0f')}" if s["ok"] else "—"
        if s["ok"] and s["errors"]:
            r["notes"].append(f"slow errors {s['errors']}")
        out.append(
            f"| {r['server']} | {r['config']} | {f['rps']:,.0f} | {fmt(f['p50'], '.2f')} "
            f"| {fmt(f['p99'], '.2f')} | {fmt(f['max'], '.2f')} | {f['errors']} | {base} "
            f"| {slow_n} | {slow_lat} | {fmt(r['srv_cpu_pct'], '.0f', '%')} "
            f"| {fmt(r['other_pct'], '.0f', '%')} | {'; '.join(r['notes'])} |")
    return "\n".join(out)


def summary(rows, args):
    by = {r["key"]: r for r in rows}
    fc, gu = by.get("ferrocorn"), by.get("gunicorn-sync")
    lines = []
    if fc and gu and fc["status"] == "ok" and gu["status"] == "ok":
        pf, pg = fc["fast"]["p99"], gu["fast"]["p99"]
        ratio = pg / pf if pf and pg else None
        lines.append(f"- fast p99 ratio gunicorn/ferrocorn: **{fmt(ratio, '.2f', '×')}** "
                     f"(ferrocorn {fmt(pf, '.2f')} ms, gunicorn {fmt(pg, '.2f')} ms)")
        for name, r in (("ferrocorn", fc), ("gunicorn", gu)):
            b = r.get("base")
            if b and b["ok"] and b["p99"]:
                lines.append(f"- {name}: fast p99 under the slow load is "
                             f"{r['fast']['p99'] / b['p99']:.2f}× its fast-alone p99 "
                             f"({b['p99']:.2f} ms)")
    else:
        lines.append("- fast p99 ratio gunicorn/ferrocorn: n/a (a server did not complete)")
    for name, r in (("ferrocorn", fc), ("gunicorn", gu)):
        if r and r["status"] == "ok" and r["fast"]["max"] is not None:
            mx = r["fast"]["max"]
            verdict = ("no fast request waited for a slow one to finish" if mx < SLOW_S * 500
                       else "some fast request(s) waited behind a slow one")
            lines.append(f"- {name}: fast max {mx:.2f} ms vs {SLOW_S * 1000:.0f} ms slow service "
                         f"time: {verdict}")
    for name, r in (("ferrocorn", fc), ("gunicorn", gu)):
        if r and r["status"] == "ok" and r["slow"]["ok"]:
            s = r["slow"]
            lines.append(f"- {name}: {s['requests']:,} slow requests completed in "
                         f"{s['duration']} s (at most {s['max_possible']:,} with "
                         f"{args.slow_connections} slow connections each on its own worker)"
                         + (f"; slow p50 {s['p50']:.0f} ms ≈ {s['p50'] / (SLOW_S * 1000):.1f} × "
                            f"{SLOW_S * 1000:.0f} ms: slow connections shared a worker and "
                            "queued behind each other"
                            if s["p50"] and s["p50"] > 1.5 * SLOW_S * 1000 else ""))
    return "\n".join(lines)


NOTES = """Notes:

- gunicorn's sync worker closes the connection after every response, so against gunicorn wrk
  reconnects for every request (fast and slow): each request is a new connection that waits in the
  kernel accept queue for any idle worker. ferrocorn keeps connections alive; an idle keep-alive
  connection stays with the worker that accepted it, and a busy sync worker does not accept new
  connections, so the fast connections, opened while the slow load is already running, are
  accepted by the idle workers.
- "fast alone" is the same fast load without the slow load, measured just before, on the same
  server: the fast requests' service time under this load.
- "slow completed" counts the slow responses wrk received over the whole slow run
  ({slow_dur} s); the bound assumes each slow connection always has a worker of its own
  ({slow_conns} × {slow_dur} s / {slow_ms:.0f} ms).
- Both loads are closed-loop (wrk): each server gets as many fast requests as it can serve, so
  a server with a much higher fast RPS also runs the 2 cores (shared with wrk) harder, which
  shows in its p99. The fast max against the 200 ms slow service time is the direct test of
  "did a fast request wait behind a slow one" (a fast request queued behind a slow one would
  take up to ~200 ms).
- ferrocorn: wrk opens its {slow_conns} slow connections at once, while every worker is idle,
  and an idle worker may accept more than one of them; since a keep-alive connection stays on
  its worker, they then share that worker (slow p50 ≈ 2 × {slow_ms:.0f} ms, about half the slow
  requests completed). gunicorn reconnects per request, so its slow requests spread out.
- A shared, noisy 2-core box: the fast load's latency includes wrk and the server competing for
  the same cores. Short runs (`--duration 3`) are smoke tests only.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=4, help="workers per server (4)")
    ap.add_argument("--duration", type=int, default=10, help="measured fast-load seconds (10)")
    ap.add_argument("--warmup", type=int, default=1, help="discarded /fast warm-up seconds (1)")
    ap.add_argument("--baseline", type=int, default=3,
                    help="seconds of fast load alone before the mix, 0 = skip (3)")
    ap.add_argument("--slow-connections", type=int, default=2, help="wrk -c on /slow (2)")
    ap.add_argument("--fast-connections", type=int, default=8, help="wrk -c on /fast (8)")
    ap.add_argument("--slow-lead", type=int, default=1,
                    help="seconds the slow load runs before the fast load starts (1)")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="ferrocorn,gunicorn-sync (both, in this order)")
    compare.add_run_args(ap)
    args = ap.parse_args()

    compare.require_wrk()
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    for n in names:
        if n not in SERVERS:
            raise SystemExit(f"unknown server {n!r} (known: {', '.join(SERVERS)})")
    variants = [compare.server_variants(n)[0] for n in names]

    ws = compare.Workspace("ferrocorn-balance-")
    env, logdir = ws.env, ws.logdir

    head = header(args)
    log(head)
    rows = []
    try:
        for seq, v in enumerate(variants, 1):
            log(f"[{seq}/{len(variants)}] mixed / {v.key}")
            row = measure(v, args, env, logdir, seq)
            if row["status"] == "ok":
                f, s = row["fast"], row["slow"]
                log(f"  fast {f['rps']:,.0f} RPS, p50 {fmt(f['p50'], '.2f')} ms, "
                    f"p99 {fmt(f['p99'], '.2f')} ms, max {fmt(f['max'], '.2f')} ms; "
                    f"slow completed {s.get('requests')}; other {row['other_pct']:.0f}% "
                    f"{' '.join(row['notes'])}")
            else:
                log(f"  {row['status']}: {row.get('error', '')}")
            rows.append(row)
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        ws.close(args.keep_logs)

    slow_dur = args.slow_lead + args.duration + 1
    parts = [head, "", "### fast requests while slow requests occupy workers", ""]
    if rows:
        parts += [table(rows, args), "", "Summary:", "", summary(rows, args), ""]
    parts.append(NOTES.format(slow_dur=slow_dur, slow_conns=args.slow_connections,
                              slow_ms=SLOW_S * 1000))
    report = "\n".join(parts)
    compare.emit(report, args.out)


if __name__ == "__main__":
    main()
