#!/usr/bin/env python3
"""Run ferrocorn's fuzz targets for a bounded time each and print a table of the results.

Usage (from the repository root)::

    python fuzz/run.py [--seconds 60] [--targets request_head,chunked,...] [--jobs 1]

Needs ``cargo fuzz`` (``cargo install cargo-fuzz --locked``). libFuzzer's instrumentation
needs unstable compiler flags: with a nightly toolchain they are there; on stable this script
sets ``RUSTC_BOOTSTRAP=1`` for the fuzz build only (the product builds on stable without it).

Seeds, made fresh in ``fuzz/corpus/<target>/`` (not committed): Gunicorn's request corpus
(downloaded by pip into tests/.corpus, as the corpus test does) for ``request_head``, and a
few hand-written inputs for the others. A target that finds a crash leaves it in
``fuzz/artifacts/<target>/`` and the script exits with status 1. Everything runs bounded by
``--seconds`` per target (libFuzzer's ``-max_total_time``) plus a build.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
sys.path.insert(0, str(ROOT / "tests"))

TARGETS = [
    "request_head",
    "chunked",
    "proxy_header",
    "websocket_frames",
    "environ_mapping",
    "config_values",
    "response_head",
    "cache_headers",
    "cache_entry",
    "upstream",
]


def hand_seeds(target: str) -> list[bytes]:
    """A few valid inputs per target, so the fuzzer starts inside the format."""
    if target == "upstream":
        return [
            b"\x00127.0.0.1:8002 weight=2 max_fails=3 fail_timeout=30s slow_start=1m backup",
            b"\x01hash $request_uri consistent balance_factor=150",
            b"\x02GET /healthz interval=2s timeout=1s fall=3 rise=2 expect=200-399",
            b"\x03error timeout http_502 non_idempotent",
            b"\x04/reports/ app=r:app worker_class=sync workers=4",
            b"\x10HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"\x93HTTP/1.0 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\x20HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ]
    if target == "chunked":
        return [b"\x03" + b"5\r\nhello\r\n0\r\n\r\n", b"\x00" + b"3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nNEXT"]
    if target == "proxy_header":
        return [
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5678 80\r\nGET / HTTP/1.1\r\n\r\n",
            b"PROXY TCP6 ::1 ::1 5678 80\r\n",
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc0\x00\x02\x02\x16\x2e\x00\x50",
        ]
    if target == "websocket_frames":
        return [b"\x07\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", b"\x00\x88\x80\x00\x00\x00\x00"]
    if target == "environ_mapping":
        return [b"/a%20b/%E2%82%AC?x=%2F\nX-FORWARDED-PROTO: https\nX-FORWARDED-SSL:on"]
    if target == "config_values":
        return [b"-w 4 -k gthread --threads 2 -b 127.0.0.1:8000 app:app", b"--timeout 30 --max-requests 1000 x:y"]
    if target == "cache_headers":
        return [b"\x32\x00max-age=60, stale-while-revalidate=30\n\x01Tue, 14 Nov 2023 23:13:20 GMT\n\x03Accept"]
    if target == "cache_entry":
        # version 1, status 200, valid until, two "no window" stale windows, stored at, head length
        fixed = (b"\x01" + (200).to_bytes(2, "little") + (1_700_000_060).to_bytes(8, "little")
                 + b"\xff" * 8 + (1_700_000_000).to_bytes(8, "little"))
        head = b'200 OK\r\nETag: "v1"\r\nLast-Modified: Tue, 15 Nov 1994 12:45:26 GMT\r\n'
        return [fixed + len(head).to_bytes(4, "little") + head + b"hello"]
    if target == "response_head":
        return [b"200 OK\x01Content-Type\x01text/plain\x01X-Word\x01caf\xe9"]
    return []


def seed(target: str) -> Path:
    corpus = FUZZ / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = hand_seeds(target)
    if target == "request_head":
        import gunicorn_corpus

        root = gunicorn_corpus.corpus_root()
        for path in sorted(root.glob("*/*.http")):
            # first byte: the limits' switches (0 = Gunicorn's defaults)
            seeds.append(b"\x00" + gunicorn_corpus.decode_http(path.read_bytes()))
    for i, data in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(data)
    return corpus


def fuzz_env() -> dict:
    env = dict(os.environ)
    version = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout
    if "nightly" not in version:
        env["RUSTC_BOOTSTRAP"] = "1"
    return env


def run_target(target: str, seconds: int, env: dict) -> dict:
    corpus = seed(target)
    proc = subprocess.run(
        ["cargo", "fuzz", "run", target, str(corpus), "--",
         f"-max_total_time={seconds}", "-print_final_stats=1", "-rss_limit_mb=2048"],
        cwd=FUZZ, env=env, capture_output=True, text=True, timeout=seconds + 600,
    )
    log = proc.stdout + proc.stderr
    stats = dict(re.findall(r"^stat::(\w+):\s*(\d+)", log, re.M))
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", log)
    artifacts = FUZZ / "artifacts" / target
    crashes = sorted(p.name for p in artifacts.iterdir()) if artifacts.is_dir() else []
    row = {
        "target": target,
        "executions": int(stats.get("number_of_executed_units", 0)),
        "per_second": int(stats.get("average_exec_per_sec", 0)),
        "coverage": int(done[-1][1]) if done else 0,
        "corpus": f"{done[-1][3]} ({done[-1][4]})" if done else "?",
        "crashes": len(crashes) if proc.returncode == 0 or crashes else "run failed",
    }
    if proc.returncode != 0:
        row["log"] = "\n".join(log.splitlines()[-30:])
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (60)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    args = ap.parse_args()
    if shutil.which("cargo-fuzz") is None:
        print("cargo fuzz is not installed: cargo install cargo-fuzz --locked", file=sys.stderr)
        return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            print(f"unknown target {t!r} (known: {', '.join(TARGETS)})", file=sys.stderr)
            return 2
    env = fuzz_env()
    subprocess.run(["cargo", "fuzz", "build"], cwd=FUZZ, env=env, check=True)
    rows = []
    for t in targets:
        print(f"fuzzing {t} for {args.seconds} s", file=sys.stderr, flush=True)
        rows.append(run_target(t, args.seconds, env))
    print(f"| target | seconds | executions | exec/s | coverage (edges) | corpus (entries, size) | crashes |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['target']} | {args.seconds} | {r['executions']:,} | {r['per_second']:,} | "
              f"{r['coverage']:,} | {r['corpus']} | {r['crashes']} |")
    failed = [r for r in rows if r["crashes"] != 0]
    for r in failed:
        print(f"\n{r['target']}:\n{r.get('log', '')}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
