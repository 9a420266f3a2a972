#!/usr/bin/env python3
"""Compare `ferrocorn-bench` with wrk against a minimal hyper server, in one run.

1. Fast server (hyper hello, 2 worker threads): wrk and ferrocorn-bench at the
   same -t/-c/-d, alternating order, REPEAT times each. Prints both RPS, the
   ratio (goal: ferrocorn-bench >= 1.0x wrk) and each generator's CPU time per
   request (user+sys from wait4 rusage of the generator process).
2. Server answering after a fixed 20 ms: both generators once each; prints the
   p50s and the ratios vs wrk and vs 20 ms (goal: within 5% of both).

Each measured run is preceded by a discarded warm-up run of the same tool
(WARMUP seconds). Loopback only; servers are stopped by PID.

Environment: DURATION (10s), WARMUP (2s), CONNECTIONS (64), THREADS (2),
REPEAT (2), SERVER_THREADS (2), CARGO_TARGET_DIR (target), SKIP_BUILD (unset).
Usage: benches/bench_vs_wrk.py     (from anywhere; builds in release first)
"""

import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
DURATION = os.environ.get("DURATION", "10s")
WARMUP = os.environ.get("WARMUP", "2s")
CONNS = os.environ.get("CONNECTIONS", "64")
THREADS = os.environ.get("THREADS", "2")
REPEAT = int(os.environ.get("REPEAT", "2"))
SERVER_THREADS = os.environ.get("SERVER_THREADS", "2")
BENCH = os.path.join(TARGET, "release", "ferrocorn-bench")
HELLO = os.path.join(TARGET, "release", "examples", "hello_server")
DELAY_MS = 20


def build():
    if os.environ.get("SKIP_BUILD"):
        return
    subprocess.run(
        ["cargo", "build", "--release", "-p", "ferrocorn-bench",
         "--bin", "ferrocorn-bench", "--example", "hello_server"],
        cwd=ROOT, check=True)


def start_server(delay_ms):
    p = subprocess.Popen([HELLO, "0", str(delay_ms), SERVER_THREADS],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        sys.exit(f"hello_server did not start: {line!r}")
    return p, f"http://127.0.0.1:{m.group(1)}/"


def stop_server(p):
    p.terminate()
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_timed(cmd):
    """Runs cmd; returns (stdout, CPU seconds (user+sys) of the process, from wait4)."""
    with tempfile.TemporaryFile(mode="w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"{cmd[0]} failed ({p.returncode}): {err.read().strip()}")
    return out, ru.ru_utime + ru.ru_stime


def to_us(v, unit):
    return float(v) * {"us": 1.0, "ms": 1e3, "s": 1e6}[unit]


def wrk(url, duration):
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONNS}", f"-d{duration}", "--latency", url]
    out, cpu = run_timed(cmd)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    return {"rps": rps, "requests": reqs, "p50_us": to_us(*m.groups()), "cpu": cpu}


def ferro(url, duration):
    cmd = [BENCH, f"-t{THREADS}", f"-c{CONNS}", f"-d{duration}", "--json", url]
    out, cpu = run_timed(cmd)
    r = json.loads(out)
    return {"rps": r["rps"], "requests": r["requests"], "p50_us": float(r["latency_us"]["p50"]), "cpu": cpu}


TOOLS = {"wrk": wrk, "ferrocorn-bench": ferro}


def measure(tool, url):
    TOOLS[tool](url, WARMUP)  # discarded warm-up
    return TOOLS[tool](url, DURATION)


def cpu_us_per_req(r):
    return 1e6 * r["cpu"] / r["requests"] if r["requests"] else float("nan")


def main():
    build()
    for exe in (BENCH, HELLO):
        if not os.access(exe, os.X_OK):
            sys.exit(f"missing {exe} (build it or set CARGO_TARGET_DIR)")
    print(f"# ferrocorn-bench vs wrk: -t{THREADS} -c{CONNS} -d{DURATION}, warm-up {WARMUP}, "
          f"hello_server with {SERVER_THREADS} threads, {os.cpu_count()} CPUs\n")

    # 1. Throughput against a fast server.
    server, url = start_server(0)
    rows, tot = [], {"wrk": 0.0, "ferrocorn-bench": 0.0}
    cpu = {"wrk": [0.0, 0], "ferrocorn-bench": [0.0, 0]}  # CPU seconds, requests
    try:
        for rep in range(REPEAT):
            order = ["wrk", "ferrocorn-bench"] if rep % 2 == 0 else ["ferrocorn-bench", "wrk"]
            res = {t: measure(t, url) for t in order}
            for t in res:
                tot[t] += res[t]["rps"]
                cpu[t][0] += res[t]["cpu"]
                cpu[t][1] += res[t]["requests"]
            rows.append((rep + 1, " then ".join(order), res))
    finally:
        stop_server(server)
    print("| run | order | wrk RPS | ferrocorn-bench RPS | ratio | wrk CPU us/req | ferrocorn-bench CPU us/req |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for rep, order, res in rows:
        w, f = res["wrk"], res["ferrocorn-bench"]
        print(f"| {rep} | {order} | {w['rps']:.0f} | {f['rps']:.0f} | {f['rps'] / w['rps']:.3f} "
              f"| {cpu_us_per_req(w):.2f} | {cpu_us_per_req(f):.2f} |")
    ratio = tot["ferrocorn-bench"] / tot["wrk"]
    cpu_w, cpu_f = (1e6 * cpu[t][0] / max(cpu[t][1], 1) for t in ("wrk", "ferrocorn-bench"))
    print(f"| all | mean | {tot['wrk'] / REPEAT:.0f} | {tot['ferrocorn-bench'] / REPEAT:.0f} "
          f"| **{ratio:.3f}** | {cpu_w:.2f} | {cpu_f:.2f} |\n")
    print(f"Generator efficiency (wrk CPU/req / ferrocorn-bench CPU/req, independent of "
          f"neighbours' load): **{cpu_w / cpu_f:.3f}**\n")

    # 2. Latency against a server answering after a fixed 20 ms.
    server, url = start_server(DELAY_MS)
    try:
        w = measure("wrk", url)
        f = measure("ferrocorn-bench", url)
    finally:
        stop_server(server)
    vs_wrk = f["p50_us"] / w["p50_us"]
    vs_fixed = f["p50_us"] / (DELAY_MS * 1000.0)
    print(f"| {DELAY_MS} ms server | wrk p50 | ferrocorn-bench p50 | ferrocorn/wrk | ferrocorn/{DELAY_MS}ms | wrk RPS | ferrocorn-bench RPS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| -t{THREADS} -c{CONNS} | {w['p50_us'] / 1000:.2f} ms | {f['p50_us'] / 1000:.2f} ms "
          f"| {vs_wrk:.3f} | {vs_fixed:.3f} | {w['rps']:.0f} | {f['rps']:.0f} |\n")

    ok_rps = ratio >= 1.0
    ok_p50 = abs(vs_wrk - 1) <= 0.05 and abs(vs_fixed - 1) <= 0.05
    print(f"RPS ratio >= 1.0: {'PASS' if ok_rps else 'FAIL'} ({ratio:.3f}); "
          f"p50 within 5% of wrk and of {DELAY_MS} ms: {'PASS' if ok_p50 else 'FAIL'} "
          f"({vs_wrk:.3f}, {vs_fixed:.3f})")
    return 0 if ok_rps and ok_p50 else 1


if __name__ == "__main__":
    sys.exit(main())
