#!/usr/bin/env python3
"""Cost of the Prometheus metrics endpoint: hello-world RPS with metrics on vs off.

Usage (from the repository root)::

    python benches/metrics_cost.py [--rounds 3] [--duration 8] [--warmup 2]
        [--workers 2] [--threads 2] [--connections 64] [--scrape-interval 1]

- on:  ``--metrics-bind 127.0.0.1:PORT --control-socket TMP/ctl`` and a background
       scraper in this script doing ``GET /metrics`` once per scrape interval;
- off: ``--no-control-socket`` and no metrics bind.

Per-request counting into shared memory is always on (it feeds the control socket and
``ferrocorn top``), so "off" means no endpoint and no scraping, not "no counting".

Each round measures both modes, alternating which goes first. Reports per-round RPS and
server µs CPU per request, and the median on/off RPS ratio (target >= 0.97). Reuses
benches/compare.py for the idle wait, start/stop by PID, CPU accounting and wrk parsing.
Linux only; needs wrk on PATH.
"""

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py)

TARGET_RATIO = 0.97


def server_argv(port, workers, mode, metrics_port, ctl_path):
    exe = ["ferrocorn"] if shutil.which("ferrocorn") else [sys.executable, "-m", "ferrocorn"]
    argv = exe + ["-b", f"127.0.0.1:{port}", "-w", str(workers)]
    if mode == "on":
        argv += ["--metrics-bind", f"127.0.0.1:{metrics_port}", "--control-socket", ctl_path]
    else:
        argv += ["--no-control-socket"]
    return argv + ["hello:app"]


class Scraper(threading.Thread):
    """GET /metrics every ``interval`` seconds until stopped; counts successes."""

    def __init__(self, url, interval):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.ok = self.failed = 0
        self.last_text = ""
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    self.last_text = r.read().decode("utf-8", "replace")
                    self.ok += r.status == 200
            except Exception:
                self.failed += 1
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)


def requests_total(text):
    total = 0.0
    for line in text.splitlines():
        if line.startswith("ferrocorn_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(mode, args, env, logdir, seq):
    row = {"mode": mode, "status": "ok", "notes": []}
    idle_ok, busy = compare.wait_for_idle(args.idle_threshold, args.idle_timeout)
    if not idle_ok:
        row["notes"].append(f"not idle ({busy:.0f}% busy)")
    port, mport = compare.free_port(), compare.free_port()
    ctl_path = os.path.join(logdir, f"{seq:03d}.ctl")
    argv = server_argv(port, args.workers, mode, mport, ctl_path)
    srv = compare.Server(argv, env, logdir, f"{seq:03d}-{mode}")
    compare.log(f"  $ {' '.join(argv)}")
    scraper = None
    try:
        srv.start()
        err = srv.wait_ready(port, args.start_timeout)
        if err is not None:
            row["status"] = "failed to start"
            row["error"] = f"{err}; stderr: {compare.first_lines(srv.err_path)}"
            return row
        if mode == "on":
            scraper = Scraper(f"http://127.0.0.1:{mport}/metrics", args.scrape_interval)
            scraper.start()
        url = f"http://127.0.0.1:{port}/"
        if args.warmup > 0:
            compare.run_wrk(url, args.threads, args.connections, args.warmup, False)
        before = srv.snapshot()
        sb0, _ = compare.sys_cpu()
        t0 = time.monotonic()
        out, wrk_cpu, rc = compare.run_wrk(url, args.threads, args.connections, args.duration, True)
        wall = time.monotonic() - t0
        sb1, _ = compare.sys_cpu()
        after = srv.snapshot()
        res = compare.parse_wrk(out)
        if rc != 0 or res["rps"] is None:
            row["status"] = "wrk failed"
            row["error"] = " | ".join(out.strip().splitlines()[-3:])
            return row
        srv_cpu = compare.tree_cpu_delta(before, after)
        other = (sb1 - sb0) / compare.CLK_TCK - srv_cpu - wrk_cpu
        reqs = res["requests"] or res["rps"] * wall
        row.update(
            rps=res["rps"], p99=res["p99"], requests=reqs,
            errors=res["socket_errors"] + res["non2xx"],
            us_per_req=1e6 * srv_cpu / reqs if reqs else None,
            other_pct=100.0 * other / wall,
        )
        if row["other_pct"] > args.noisy_threshold:
            row["notes"].append("noisy")
        if scraper is not None:
            scraper.stop()
            row["scrapes"] = f"{scraper.ok} ok / {scraper.failed} failed"
            # sanity: the endpoint really counted the load (warm-up + measured requests)
            counted = requests_total(scraper.last_text)
            if counted < 0.9 * reqs:
                row["notes"].append(f"last scrape counted only {counted:,.0f} requests")
        else:
            row["scrapes"] = "—"
        return row
    finally:
        if scraper is not None and scraper.is_alive():
            scraper.stop()
        srv.stop()


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="on/off pairs, alternating order (3)")
    ap.add_argument("--duration", type=int, default=8, help="measured wrk seconds (8)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up seconds (2)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between scrapes (1)")
    compare.add_run_args(ap, idle_timeout=30.0, keep_logs=False)
    ap.add_argument("--no-retry-noisy", dest="retry_noisy", action="store_false",
                    help="do not rerun a noisy run once (default: rerun, keep the cleaner one)")
    args = ap.parse_args()
    compare.require_wrk()

    ws = compare.Workspace("ferrocorn-metrics-cost-")
    env, logdir = ws.env, ws.logdir

    rows = []
    seq = 0
    try:
        for rnd in range(args.rounds):
            order = ("on", "off") if rnd % 2 == 0 else ("off", "on")
            for mode in order:
                seq += 1
                compare.log(f"[round {rnd + 1}/{args.rounds}] metrics {mode}")
                row = measure(mode, args, env, logdir, seq)
                if args.retry_noisy and row["status"] == "ok" and "noisy" in row["notes"]:
                    compare.log(f"  noisy (other CPU {row['other_pct']:.0f}%), retrying once")
                    seq += 1
                    retry = measure(mode, args, env, logdir, seq)
                    if retry["status"] == "ok" and retry["other_pct"] < row["other_pct"]:
                        retry["notes"].append(f"retried (first: {row['rps']:,.0f} RPS, "
                                              f"other {row['other_pct']:.0f}%)")
                        row = retry
                    else:
                        row["notes"].append("retry no cleaner")
                row["round"] = rnd + 1
                rows.append(row)
                if row["status"] == "ok":
                    compare.log(f"  {row['rps']:,.0f} RPS, {fmt(row['us_per_req'], '.1f')} µs/req, "
                                f"other {row['other_pct']:.0f}% {' '.join(row['notes'])}")
                else:
                    compare.log(f"  {row['status']}: {row.get('error', '')}")
    except KeyboardInterrupt:
        compare.log("interrupted; reporting what was measured")
    finally:
        ws.close()

    lines = [
        f"## metrics cost: hello, -w {args.workers}, wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s (after {args.warmup} s warm-up), {args.rounds} round(s)",
        "",
        f"- ferrocorn: {compare.cmd_version(['ferrocorn', '--version'])}; machine: {os.cpu_count()} CPUs",
        f"- on = `--metrics-bind` + `--control-socket` + a scraper GETting /metrics every "
        f"{args.scrape_interval:g} s; off = `--no-control-socket`, no metrics bind.",
        "- Per-request counting into shared memory is always on (it feeds the control socket and "
        "`ferrocorn top`), so \"off\" means no endpoint and no scraping.",
        "",
        "| round | metrics | RPS | p99 ms | server µs CPU/req | other CPU | errors | scrapes | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['round']} | {r['mode']} | **{r['status']}** | | | | | | "
                         f"{r.get('error', '')[:200].replace('|', '/')} |")
            continue
        lines.append(
            f"| {r['round']} | {r['mode']} | {r['rps']:,.0f} | {fmt(r['p99'], '.2f')} "
            f"| {fmt(r['us_per_req'], '.1f')} | {r['other_pct']:.0f}% | {r['errors']} "
            f"| {r['scrapes']} | {'; '.join(r['notes'])} |")
    ratios = []
    for rnd in range(1, args.rounds + 1):
        pair = {r["mode"]: r for r in rows if r["round"] == rnd and r["status"] == "ok"}
        if "on" in pair and "off" in pair:
            ratios.append(pair["on"]["rps"] / pair["off"]["rps"])
    lines.append("")
    if ratios:
        med = statistics.median(ratios)
        verdict = "met" if med >= TARGET_RATIO else "NOT met"
        on_us = [r["us_per_req"] for r in rows if r["status"] == "ok" and r["mode"] == "on" and r["us_per_req"]]
        off_us = [r["us_per_req"] for r in rows if r["status"] == "ok" and r["mode"] == "off" and r["us_per_req"]]
        lines.append(f"Per-round on/off RPS ratios: {', '.join(f'{x:.3f}' for x in ratios)}")
        lines.append(f"**Median on/off RPS ratio: {med:.3f}** (target ≥ {TARGET_RATIO}: {verdict})")
        if on_us and off_us:
            lines.append(f"Median server µs CPU/req: on {statistics.median(on_us):.1f}, "
                         f"off {statistics.median(off_us):.1f}")
    else:
        lines.append("No complete on/off pair measured.")
    report = "\n".join(lines)
    compare.emit(report, args.out)


if __name__ == "__main__":
    main()
