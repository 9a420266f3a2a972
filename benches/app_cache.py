#!/usr/bin/env python3
"""The app cache against Redis: ``ferrocorn.cache.get`` vs redis-py ``GET`` from the same process.

Usage (from the repository root)::

    python benches/app_cache.py [--ops 200000] [--rounds 3] [--value-size 13] [--out FILE.md]

Each round measures, in this order (alternating per round), one small value (``--value-size``
bytes of ASCII as a ``str``) read again and again:

* ``ferrocorn.cache.get`` — the app cache's store. Outside a ferrocorn worker the module keeps its
  values in a store private to the process, but it is the same shared-memory store type, mapped
  the same way, and the same code path per call as inside a worker (only the mapping's owner
  differs), so the figure is what a view pays per ``cache.get``.
* ``ferrocorn.cache.set`` and ``ferrocorn.cache.incr``.
* ``redis-py GET`` over TCP loopback and over a unix socket, ``SET`` and ``INCR`` over TCP,
  against a ``redis-server`` started by the script (no persistence) and stopped by its PID; the
  value is pickled and unpickled around ``GET``/``SET`` as an app's cache layer does (the
  ferrocorn rows pickle too).
* Django's ``LocMemCache.get``: the per-process dictionary most apps start with (one copy per
  worker), as a reference for what a shared cache costs over a private one.

Columns: operations per second and µs per operation of wall time; CPU µs per operation of this
process plus, for the Redis rows, redis-server's own CPU over the same window (from /proc); the
ratio of the ``ferrocorn.cache.get`` row to each row. The median over rounds is reported.

Needs ``redis-server`` (``apt-get install -y redis-server``) and ``pip install redis``; Django is
optional (its row is skipped without it). Loopback only; Linux only.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (benches/compare.py: CPU accounting, free ports, platform header)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    fields = compare.read_proc_stat_pid(pid)
    return fields[1] / CLK_TCK if fields else 0.0


class RedisServer:
    """A throwaway redis-server on a loopback port and a unix socket, stopped by its PID."""

    def __init__(self, workdir: str):
        self.port = compare.free_port()
        self.unix = os.path.join(workdir, "redis.sock")
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", self.unix,
            "--save", "", "--appendonly", "no", "--dir", workdir,
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if os.path.exists(self.unix):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def timed(loop, ops: int, server_pid: int | None) -> dict:
    server_before = process_cpu_seconds(server_pid) if server_pid else 0.0
    cpu_before = time.process_time()
    started = time.perf_counter()
    loop(ops)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    if server_pid:
        cpu += process_cpu_seconds(server_pid) - server_before
    return {"ops_s": ops / wall, "us_op": wall / ops * 1e6, "cpu_us_op": cpu / ops * 1e6}


def workloads(args, redis_server: RedisServer | None) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the process store's one-time warning
        from ferrocorn import cache

    value = "v" * args.value_size
    cache.set("bench:key", value)
    cache.set("bench:n", 0)
    assert cache.get("bench:key") == value

    def fc_get(n):
        get = cache.get
        for _ in range(n):
            get("bench:key")

    def fc_set(n):
        put = cache.set
        for _ in range(n):
            put("bench:key", value)

    def fc_incr(n):
        incr = cache.incr
        for _ in range(n):
            incr("bench:n")

    rows = {
        "ferrocorn.cache.get": (fc_get, None),
        "ferrocorn.cache.set": (fc_set, None),
        "ferrocorn.cache.incr": (fc_incr, None),
    }
    if redis_server is not None:
        import redis

        tcp = redis.Redis(host="127.0.0.1", port=redis_server.port)
        unix = redis.Redis(unix_socket_path=redis_server.unix)
        tcp.set("bench:key", pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
        tcp.set("bench:n", 0)
        assert pickle.loads(unix.get("bench:key")) == value

        def redis_get(client):
            def loop(n):
                get, loads = client.get, pickle.loads
                for _ in range(n):
                    loads(get("bench:key"))

            return loop

        def redis_set(n):
            put, dumps = tcp.set, pickle.dumps
            for _ in range(n):
                put("bench:key", dumps(value, pickle.HIGHEST_PROTOCOL))

        def redis_incr(n):
            incr = tcp.incr
            for _ in range(n):
                incr("bench:n")

        pid = redis_server.proc.pid
        rows["redis-py GET (tcp)"] = (redis_get(tcp), pid)
        rows["redis-py GET (unix socket)"] = (redis_get(unix), pid)
        rows["redis-py SET (tcp)"] = (redis_set, pid)
        rows["redis-py INCR (tcp)"] = (redis_incr, pid)
    try:
        from django.conf import settings

        if not settings.configured:
            settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
        from django.core.cache.backends.locmem import LocMemCache

        locmem = LocMemCache("bench", {})
        locmem.set("bench:key", value, None)

        def locmem_get(n):
            get = locmem.get
            for _ in range(n):
                get("bench:key")

        rows["django LocMemCache.get (per process)"] = (locmem_get, None)
    except ImportError:
        pass
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=200_000, help="operations per row per round (Redis rows: a tenth)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--value-size", type=int, default=13)
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="app-cache-bench-")
    redis_server = None
    if shutil.which("redis-server"):
        try:
            import redis  # noqa: F401

            redis_server = RedisServer(workdir)
        except ImportError:
            print("redis-py missing (pip install redis): Redis rows skipped", file=sys.stderr)
    else:
        print("redis-server missing (apt-get install -y redis-server): Redis rows skipped", file=sys.stderr)
    try:
        rows = workloads(args, redis_server)
        results: dict[str, list[dict]] = {name: [] for name in rows}
        for rnd in range(args.rounds):
            order = list(rows) if rnd % 2 == 0 else list(reversed(rows))
            for name in order:
                loop, pid = rows[name]
                ops = args.ops // 10 if pid else args.ops  # a Redis round trip is ~100× slower
                loop(min(ops, 1000))  # warm up
                results[name].append(timed(loop, ops, pid))
    finally:
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    median = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    base = median["ferrocorn.cache.get"]
    lines = [
        f"# App cache: ferrocorn.cache vs redis-py ({args.rounds} rounds, median; value {args.value_size} bytes)",
        "",
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| operation | ops/s | µs/op | CPU µs/op (client + redis-server) | ferrocorn.cache.get ÷ row |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in median.items():
        lines.append(
            f"| {name} | {m['ops_s']:,.0f} | {m['us_op']:.2f} | {m['cpu_us_op']:.2f} | "
            f"{base['ops_s'] / m['ops_s']:.1f}× |"
        )
    target = "redis-py GET (tcp)"
    if target in median:
        ratio = base["ops_s"] / median[target]["ops_s"]
        verdict = "meets" if ratio >= 5 else "misses"
        lines += ["", f"ferrocorn.cache.get ÷ redis-py GET (tcp) = {ratio:.1f}× ({verdict} the ≥ 5× target)"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
