"""benches/chaos_backends.py ``--scenario upstream``: an upstream of ``ferrocorn balance``
killed and restarted under load.

Three upstreams, each ``ferrocorn -w 1 -k gthread --threads 4`` (keep-alive 2 s, the
default) with an app that answers ``X-Upstream: NAME`` (and a POST with its body's length),
behind ``ferrocorn balance -w 2 --upstream 'ADDR max_fails=1 fail_timeout=2s'`` ×3, its
keep-alive pool at its defaults (64 idle connections per worker, closed after 60 s idle, or
within 250 ms once the upstream closed them). A GET client (closed loop, 8 connections) and a
POST client (a 64-byte body, 4 req/s) run the whole time. Every ``--every`` seconds the next
upstream in turn has its whole process group (master and worker) SIGKILLed and is started
again on the same port ``--down`` seconds (2) later. Checks:

* no GET fails (an idempotent request goes to the next upstream); at most 2 POSTs per kill
  fail (a POST that had reached the killed upstream is not sent twice: 502);
* after the last restart every upstream gets traffic again (``X-Upstream`` over plain
  requests at the end);
* just before each restart (``--down`` seconds after the kill) no balancer worker holds a
  socket to the killed upstream: none of the connections they held to it before the kill
  (whatever became of them: closed by the upstream, or reset), and no other socket towards its
  port, where nothing listens then; the report gives the most seen at any restart;
* the balancer's master's descriptors did not grow and its RSS grew by less than 2 MiB; its
  workers (the same pids at the end) held no more upstream connections as the load ended than
  the clients' concurrency allows (3 × 10); once the upstreams' keep-alive has closed the
  pooled connections (at most 12 s after the last request) they hold no socket to an upstream
  at all (none to a killed one, none closed by the upstream or reset) and no more descriptors
  than before the load (``/proc/PID/fd`` against ``/proc/net/tcp``);
* no process of the balancer or of any upstream (every generation) outlives its TERM or
  SIGKILL; no file is left in the servers' ``TMPDIR``.
"""

import os
import re
import signal
import time

import compare  # benches/compare.py: Server, free_port, /proc helpers
from chaos import (CLIENT_TABLE_HEAD, alive, chaos_workspace, client_row, collect, failed,
                   fd_count, get, master_growth, start_client, stop_master, workers_of)
from sockets_of import fmt_kinds, socket_inodes, sum_kinds, towards

APP = '''
import os

NAME = os.environ.get("CHAOS_UPSTREAM", "?")


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        body = str(len(environ["wsgi.input"].read())).encode()
    else:
        body = NAME.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Upstream", NAME)])
    return [body]
'''

NAMES = ["a", "b", "c"]
GET_CONNECTIONS = 8
POST_BODY = b"p" * 64
POST_PER_KILL = 2          # POSTs allowed to fail per upstream killed
FAIL_TIMEOUT = 2           # seconds, the upstreams' fail_timeout
# The upstreams keep their default keep-alive (2 s). With the balancer's idle timeout at its
# default 60 s, that is what ends the pooled connections once the load stops (the upstream
# closes them, the pool's sweep lets them go): the end check waits for it. A longer one
# (`--keep-alive 10`, when the balancer ran with a 5 s idle timeout) is not needed: the kill
# check does not tell a killed upstream's connections by who closed them, it looks while
# nothing listens on its port; and the pool held about as many connections to the upstream at
# each kill with 2 s (6 to 9) as with 10 s (8 to 10): under load they are all in use.
UPSTREAM_KEEP_ALIVE = 2
SETTLE_S = UPSTREAM_KEEP_ALIVE + 10   # the longest wait for the pool to empty


def kill_group(srv):
    """SIGKILL the instance's whole process group (its own session: master and workers) and
    reap the master; returns the pids of the group still alive 2 s later."""
    snap = srv.snapshot()
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        left = [pid for pid, st in snap.items() if alive(pid, st[3])]
        if not left:
            return []
        time.sleep(0.05)
    return left


def settled(pids, ports):
    """Wait (up to :data:`SETTLE_S`) until ``pids`` hold no socket to ``ports`` (the upstreams
    closed the pooled connections, the pool let them go); returns ``(seconds waited, their
    descriptors by kind)``."""
    started = time.monotonic()
    while True:
        kinds = sum_kinds(pids, ports)
        if not (kinds["upstream"] or kinds["stale"] or kinds["reset"]) \
                or time.monotonic() - started > SETTLE_S:
            return time.monotonic() - started, kinds
        time.sleep(0.25)


def balancer_log(path):
    """The balancer's warnings and errors, and how many of them by what failed ("error:
    connect failed", ...)."""
    with open(path, errors="replace") as f:
        lines = [ln for ln in f if re.search(r"\[(WARNING|ERROR|CRITICAL)\]", ln)]
    reasons = {}
    for ln in lines:
        m = re.search(r"failed \((\w+)\): ([^:;(]+)", ln)
        reason = f"{m.group(1)}: {m.group(2).strip()}" if m else ln.split("] ", 3)[-1][:60]
        reasons[reason] = reasons.get(reason, 0) + 1
    return lines, reasons


def run(args, report, failures):
    down = 2.0 if args.down is None else args.down
    ws, run_tmp, env = chaos_workspace("ferrocorn-chaos-upstream-", APP)
    ports = {name: compare.free_port(restartable=True) for name in NAMES}  # restarted on them
    generation = {name: 1 for name in NAMES}

    def upstream(name):
        argv = ["ferrocorn", "-b", f"127.0.0.1:{ports[name]}", "-w", "1", "-k", "gthread",
                "--threads", "4", "--graceful-timeout", "5", "--no-control-socket", "chaos_app:app"]
        return compare.Server(argv, dict(env, CHAOS_UPSTREAM=name), ws.logdir,
                              f"upstream-{name}-{generation[name]}")

    ups = {name: upstream(name) for name in NAMES}
    retired = []   # the killed generations (their Server objects, for the final stop)
    port = compare.free_port()
    argv = ["ferrocorn", "balance", "-b", f"127.0.0.1:{port}", "-w", "2", "--graceful-timeout", "5"]
    for name in NAMES:
        argv += ["--upstream", f"127.0.0.1:{ports[name]} max_fails=1 fail_timeout={FAIL_TIMEOUT}s"]
    bal = compare.Server(argv, env, ws.logdir, "chaos-balance")
    events = []
    probe_statuses = {}
    held_at_kill, held_at_restart = [], []   # per kill: sockets to the killed upstream
    killed = set()   # the inodes of every connection the workers held to a killed upstream
    try:
        for name in NAMES:
            ups[name].start()
        for name in NAMES:
            err = ups[name].wait_ready(ports[name], 20)
            if err:
                raise SystemExit(f"upstream {name} did not start: {err}")
            ups[name].snapshot()
        bal.start()
        err = bal.wait_ready(port, 20)
        if err:
            raise SystemExit(f"balancer did not start: {err}")
        master = bal.proc.pid
        base = f"http://127.0.0.1:{port}"
        upstream_ports = set(ports.values())
        balancers = workers_of(master)
        bal.snapshot()
        # Before the load: once the upstream has closed wait_ready's pooled connection.
        _, workers_before = settled(balancers, upstream_ports)
        fds_before, rss_before = fd_count(master), compare.rss_kib(master)
        clients = [
            start_client("get", base + "/", ["-c", str(GET_CONNECTIONS), "-t", "1"],
                         args.duration, env, ws.logdir),
            start_client("post", base + "/", ["-c", "2", "--rate", "4", "-m", "POST",
                                              "--body", POST_BODY.decode()],
                         args.duration, env, ws.logdir),
        ]
        time.sleep(1.0)
        loaded = sum_kinds(balancers, upstream_ports)
        started = time.monotonic()
        last_restart = started
        n = 0
        while time.monotonic() - started < args.duration - args.every:
            time.sleep(max(0.0, started + (n + 1) * args.every - time.monotonic()))
            name = NAMES[n % len(NAMES)]
            bal.snapshot()
            before_kill = towards(balancers, ports[name])
            left = kill_group(ups[name])
            if left:
                failures.append(f"upstream {name}: {left} outlived SIGKILL of its process group")
            retired.append(ups[name])
            time.sleep(down)
            # Nothing listens on the port now: every socket towards it is one to the killed
            # upstream, as is any connection held to it before the kill.
            held_at_kill.append(len(before_kill))
            held_at_restart.append(len(towards(balancers, ports[name])
                                       | (socket_inodes(balancers) & before_kill)))
            killed |= before_kill
            generation[name] += 1
            ups[name] = upstream(name)
            ups[name].start()
            err = ups[name].wait_ready(ports[name], 20)
            last_restart = time.monotonic()
            if err:
                failures.append(f"upstream {name} restart: {err}")
                break
            ups[name].snapshot()
            events.append(name)
            n += 1
        results = {c[0]: collect(c) for c in clients}
        bal.snapshot()
        after_load = sum_kinds(balancers, upstream_ports)

        # Every upstream answers again (once its fail_timeout has run out).
        time.sleep(max(0.0, last_restart + FAIL_TIMEOUT + 1 - time.monotonic()))
        seen = {}
        for _ in range(5):
            seen = {}
            for _ in range(30):
                status, headers, _ = get(base + "/")
                probe_statuses[status] = probe_statuses.get(status, 0) + 1
                if status == 200:
                    who = headers.get("X-Upstream")
                    seen[who] = seen.get(who, 0) + 1
            if all(seen.get(name) for name in NAMES):
                break
            time.sleep(1.0)
        # The end: the upstreams have closed the pooled connections, the pool let them go.
        balancers_after = workers_of(master)
        waited, workers_after = settled(balancers_after, upstream_ports)
        killed_at_end = len(socket_inodes(balancers_after) & killed)
        fds_after, rss_after = fd_count(master), compare.rss_kib(master)

        survivors = stop_master(master, bal, dict(bal.known), failures, "the balancer")
        for name in NAMES:
            ups[name].snapshot()
            survivors += stop_master(ups[name].proc.pid, ups[name], dict(ups[name].known),
                                     failures, f"upstream {name}")
        for old in retired:
            survivors += [pid for pid, start in old.known.items() if alive(pid, start)]
        leftovers = sorted(os.listdir(run_tmp))
        warnings, reasons = balancer_log(bal.err_path)

        kills = len(held_at_restart)
        # While the load ran, a worker kept at most one connection per request it had in flight
        # to an upstream at once: the clients' connections, per upstream.
        max_pooled = len(NAMES) * (GET_CONNECTIONS + 2)
        get_r, post_r = results["get"], results["post"]
        get_failed, post_failed = failed(get_r), failed(post_r)
        if get_failed is None:
            failures.append("the GET client reported nothing")
        elif get_failed:
            failures.append(f"GET: {get_failed} failed (statuses {get_r.get('status')}, "
                            f"errors {get_r.get('errors')})")
        if post_failed is None:
            failures.append("the POST client reported nothing")
        elif post_failed > POST_PER_KILL * kills:
            failures.append(f"POST: {post_failed} failed, more than {POST_PER_KILL} per kill "
                            f"(statuses {post_r.get('status')}, errors {post_r.get('errors')})")
        bad_probes = {k: v for k, v in probe_statuses.items() if k != 200}
        if bad_probes:
            failures.append(f"plain GETs at the end answered {bad_probes}")
        missing = [name for name in NAMES if not seen.get(name)]
        if missing:
            failures.append(f"no traffic to upstream(s) {missing} at the end ({seen})")
        if not events:
            failures.append("no event happened")
        if max(held_at_restart, default=0):
            failures.append(f"balancer workers held sockets to the killed upstream {down:g} s "
                            f"after the kill: {held_at_restart} (per kill)")
        master_growth("balancer master", fds_before, fds_after, rss_before, rss_after, failures)
        if sorted(balancers_after) != sorted(balancers):
            failures.append(f"balancer workers changed {balancers} -> {balancers_after}")
        if after_load["upstream"] + after_load["stale"] > max_pooled:
            failures.append(f"balancer workers held {after_load['upstream'] + after_load['stale']}"
                            f" upstream connections after the load, more than the clients' "
                            f"concurrency allows ({max_pooled})")
        if workers_after["upstream"] or workers_after["stale"] or workers_after["reset"] \
                or killed_at_end:
            failures.append(f"balancer workers still hold upstream sockets {waited:.1f} s after "
                            f"the last request: {fmt_kinds(workers_after)}, {killed_at_end} of "
                            f"them to a killed upstream")
        if workers_after["total"] > workers_before["total"]:
            failures.append(f"balancer workers' descriptors grew {workers_before['total']} -> "
                            f"{workers_after['total']}")
        if survivors:
            failures.append(f"processes outlived their TERM or SIGKILL: {survivors}")
        if leftovers:
            failures.append(f"files left in TMPDIR: {leftovers[:10]}")

        report += [
            f"### Chaos: an upstream killed behind `ferrocorn balance -w 2`, {args.duration} s, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "",
            f"- setup: 3 upstreams `ferrocorn -k gthread -w 1 --threads 4` (keep-alive "
            f"{UPSTREAM_KEEP_ALIVE} s, the default), each `max_fails=1 fail_timeout="
            f"{FAIL_TIMEOUT}s`; the balancer's keep-alive pool at its defaults (`--keepalive 64 "
            f"--upstream-keepalive-timeout 60`), round robin",
            f"- events ({kills}, every {args.every:g} s): SIGKILL of one upstream's process group "
            f"(master and worker), in turn {', '.join(NAMES)}, each started again on the same "
            f"port {down:g} s later",
            "",
            CLIENT_TABLE_HEAD,
            client_row(f"get (closed loop, {GET_CONNECTIONS} connections)", get_r),
            client_row(f"post ({len(POST_BODY)}-byte body, 4 req/s)", post_r),
            "",
            f"- GET failures allowed: 0; failed: {get_failed}. POST failures allowed "
            f"({POST_PER_KILL} per kill): {POST_PER_KILL * kills}; failed: {post_failed}",
            f"- the balancer's log: {len(warnings)} warnings, by what failed: {reasons}",
            f"- at the end, {sum(seen.values())} plain GETs: X-Upstream "
            f"{dict(sorted(seen.items(), key=lambda kv: str(kv[0])))}; statuses of all plain "
            f"GETs {dict(sorted((str(k), v) for k, v in probe_statuses.items()))}",
            f"- sockets the balancer workers held to the killed upstream, per kill: just before "
            f"the kill {held_at_kill}; {down:g} s later, just before its restart "
            f"{held_at_restart} (allowed: 0; most: {max(held_at_restart, default=0)})",
            f"- balancer workers' descriptors (both workers, the same pids at the end: "
            f"{'yes' if sorted(balancers_after) == sorted(balancers) else 'NO'}): before the "
            f"load {fmt_kinds(workers_before)}; under load {fmt_kinds(loaded)}; as the load "
            f"ended {fmt_kinds(after_load)}; {waited:.1f} s after the last request (the "
            f"upstreams' {UPSTREAM_KEEP_ALIVE} s keep-alive, then the pool's sweep) "
            f"{fmt_kinds(workers_after)}, {killed_at_end} to a killed upstream",
            f"- balancer master descriptors {fds_before} -> {fds_after}, RSS {rss_before} -> "
            f"{rss_after} KiB; processes left after TERM (balancer, every upstream generation): "
            f"{len(survivors)}; files left in TMPDIR: {len(leftovers)}",
            f"- result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
        ]
    except KeyboardInterrupt:
        compare.log("interrupted")
        failures.append("interrupted")
    finally:
        bal.stop()
        for srv in list(ups.values()) + retired:
            srv.stop()
        ws.close(args.keep_logs)
