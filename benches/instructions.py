#!/usr/bin/env python3
"""Instructions per request, counted by valgrind (callgrind): a same-run A/B of builds of the
native module that does not depend on how busy the machine is (the timing benches here move by
±10 % from run to run on a shared 2-core box; an instruction count repeats within a fraction of
a percent).

Usage (from the repository root)::

    python benches/instructions.py BUILD [BUILD ...] [--classes sync,gthread,asgi,gevent]
        [--requests 2000] [--new-connections] [--out FILE.md]

A BUILD is the path of a built ``_native*.so`` (``target/release/lib_native.so`` after
``cargo build --release -p ferrocorn-native``, or a copy kept from an earlier build),
optionally followed by ``:PATH`` of the ``_asgi.py`` that goes with it. For each build and
class: the build is copied over the installed module, one worker (``-w 1``) is started under
``valgrind --tool=callgrind --trace-children=yes``, warmed up with 300 requests, its counters
are zeroed (``callgrind_control -z``), ``ab`` sends ``--requests`` requests for the 13-byte
hello (keep-alive, 4 connections; or one connection per request with
``--new-connections``), and the worker's counters are dumped (``callgrind_control -d``). The
worker's instructions (every thread) divided by the requests is the figure. The installed
module is restored at the end. Needs valgrind and ab (Debian: valgrind, apache2-utils).
"""

import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# The apps: benches/apps/hello.py and hello_asgi.py (the 13-byte hello every bench uses).
APPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
CLASS_ARGS = {
    "sync": ("hello:app", []),
    "gthread": ("hello:app", ["-k", "gthread", "--threads", "4"]),
    "gevent": ("hello:app", ["-k", "gevent"]),
    "asgi": ("hello_asgi:app", ["-k", "asgi"]),
}


def installed_module():
    # Found without importing it: a loaded _native would be mapped into this process, and
    # replacing it under a mapping crashes the process.
    import importlib.util
    here = importlib.util.find_spec("ferrocorn").submodule_search_locations[0]
    return glob.glob(os.path.join(here, "_native*.so"))[0], os.path.join(here, "_asgi.py")


def put(src, dst):
    """Install ``src`` at ``dst`` as a new file (a rename, never a rewrite in place), so a
    process that still has the old module mapped keeps an intact copy."""
    tmp = dst + ".instructions-tmp"
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server on port {port} did not answer within {timeout} s")


def ab(port, requests, keepalive):
    args = ["ab", "-q", "-n", str(requests), "-c", "4"] + (["-k"] if keepalive else [])
    out = subprocess.run(args + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    if failed:
        raise SystemExit(f"ab: {failed} failed requests")


def count(klass, requests, keepalive, apps, outdir):
    app, args = CLASS_ARGS[klass]
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no",
           f"--callgrind-out-file={outdir}/callgrind.%p",
           sys.executable, "-m", "ferrocorn", "-w", "1", "-b", f"127.0.0.1:{port}",
           "--chdir", apps, "--no-control-socket", *args, app]
    master = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_up(port)
        worker = int(subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True,
                                    text=True).stdout.split()[0])
        ab(port, 300, keepalive)
        subprocess.run(["callgrind_control", "-z", str(worker)], capture_output=True, check=True)
        ab(port, requests, keepalive)
        subprocess.run(["callgrind_control", "-d", str(worker)], capture_output=True, check=True)
        dumps = sorted(glob.glob(f"{outdir}/callgrind.{worker}.*"), key=os.path.getmtime)
        summary = re.search(r"^summary: (\d+)", open(dumps[-1]).read(), re.M)
        return int(summary.group(1)) / requests
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+", help="path of a _native*.so [:path of its _asgi.py]")
    ap.add_argument("--classes", default="sync,gthread,asgi,gevent")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--new-connections", action="store_true",
                    help="one connection per request (ab without -k)")
    ap.add_argument("--out", help="append the markdown table to this file")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "ab"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install valgrind apache2-utils)")
    module, glue = installed_module()
    saved = tempfile.mkdtemp(prefix="instructions-")
    shutil.copy(module, saved)
    shutil.copy(glue, saved)
    apps = APPS_DIR
    classes = args.classes.split(",")
    results = {}
    try:
        for index, build in enumerate(args.builds):
            so, _, build_glue = build.partition(":")
            put(so, module)
            put(build_glue or os.path.join(saved, os.path.basename(glue)), glue)
            for klass in classes:
                with tempfile.TemporaryDirectory(prefix="callgrind-") as outdir:
                    per_request = count(klass, args.requests, not args.new_connections, apps, outdir)
                results[(index, klass)] = per_request
                print(f"{os.path.basename(so)} {klass}: {per_request:,.0f} instructions per request",
                      flush=True)
    finally:
        put(os.path.join(saved, os.path.basename(module)), module)
        put(os.path.join(saved, os.path.basename(glue)), glue)
    pattern = "one connection per request" if args.new_connections else "keep-alive, 4 connections"
    lines = [f"Instructions per request (callgrind, `-w 1`, {pattern}, {args.requests} requests):", "",
             "| class | " + " | ".join(os.path.basename(b.partition(':')[0]) for b in args.builds) + " |",
             "|---|" + "---:|" * len(args.builds)]
    for klass in classes:
        first = results[(0, klass)]
        cells = [f"{results[(i, klass)]:,.0f}" + ("" if i == 0 else
                 f" ({results[(i, klass)] / first - 1:+.1%})") for i in range(len(args.builds))]
        lines.append(f"| {klass} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
