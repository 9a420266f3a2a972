"""`ferrocorn balance` over several hosts: one goes down under load and comes back, and no
request is lost.

Two cases of one test:

- ``netns``: three network namespaces (``fc-hN-PID``), each joined to the root namespace by a veth
  pair on its own /30 in 10.201.X.0/24 (X from the test's pid), each running a ferrocorn instance
  of ``tests/apps/upstream_app.py`` bound to its namespace's address (``ip netns exec NS python
  -m ferrocorn ...``). "Down" is ``ip link set <veth> down`` inside the namespace: the host stops
  answering at all (connects time out, requests on kept-alive connections get no answer), the
  hard case for a balancer. "Up" is the link set up again; the instance ran all along. A
  ``unreachable 10.201.X.0/24`` route (metric 4000) keeps the test's traffic off the default
  route whatever happens to the links. Namespaces, veths and the route are removed in the
  fixture's teardown, and the instances are stopped by PID before that. Needs root (or
  CAP_NET_ADMIN) and iproute2; skipped with the reason otherwise.
- ``loopback``: the same on 127.0.0.2/.3/.4 (always runs). "Down" is SIGKILL of the instance's
  process group (connections are refused), "up" is a new instance on the same address and port.

The balancer (``-w 1``, in the root namespace) has ``max_fails=1 fail_timeout=4s`` on each
upstream, ``--upstream-connect-timeout 0.5`` and ``--upstream-timeout 1``, so a GET whose
attempt errs or times out goes on to the next upstream. Four client threads send GETs all along.

Checked: every request is answered 200 (none lost, though some were in flight on the host when
it went down); once the balancer has logged the host's failure, no request is tried on it (no
further failed attempt in its log, no request slowed by an attempt on it) until fail_timeout has
passed; after it is up again it is probed and gets requests again.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest
import requests

from conftest import ServerFactory, ferrocorn_cmd
from procs import wait_until

FAIL_TIMEOUT = 4.0
CONNECT_TIMEOUT = 0.5
UPSTREAM_TIMEOUT = 1.0
CLIENTS = 4
VICTIM = 1  # index of the host taken down (h2)
PID = os.getpid()


def ip(*args, check=True):
    """``ip ARGS``; with check=False (teardown) nothing it does can raise."""
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=check)
    except (OSError, subprocess.TimeoutExpired):
        if check:
            raise
        return None


def kill_group(srv):
    try:
        os.killpg(srv.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    srv.proc.wait(5)


def start_instance(factory: ServerFactory, name: str, host: str, port: int, prefix=()):
    return factory(
        "upstream_app:app", "-b", f"{host}:{port}", "-w", 1, "-k", "gthread", "--threads", 4,
        "--keep-alive", 10, env={"UPSTREAM_NAME": name}, cmd=list(prefix) + ferrocorn_cmd(),
    )


class LoopbackHosts:
    """Three instances on 127.0.0.2/.3/.4; down = SIGKILL, up = a new instance on the same port."""

    kind = "loopback"

    def __init__(self, factory: ServerFactory):
        self.factory = factory
        self.names = [f"h{i}" for i in (1, 2, 3)]
        self.hosts = [f"127.0.0.{i}" for i in (2, 3, 4)]
        self.ports = []
        for h in self.hosts:
            with socket.socket() as s:
                s.bind((h, 0))
                self.ports.append(s.getsockname()[1])
        self.instances = [start_instance(factory, n, h, p) for n, h, p in zip(self.names, self.hosts, self.ports)]

    def addr(self, i) -> str:
        return f"{self.hosts[i]}:{self.ports[i]}"

    def down(self, i):
        kill_group(self.instances[i])

    def up(self, i):
        self.instances[i] = start_instance(self.factory, self.names[i], self.hosts[i], self.ports[i])

    def cleanup(self):
        pass


class NetnsHosts:
    """Three network namespaces joined to the root one by veth pairs; down = the link down."""

    kind = "netns"

    def __init__(self, factory: ServerFactory):
        self.factory = factory
        self.octet = PID % 250
        self.net = f"10.201.{self.octet}.0/24"
        self.names = [f"h{i}" for i in (1, 2, 3)]
        self.ns = [f"fc-h{i}-{PID}" for i in (1, 2, 3)]
        tag = PID % 100000
        self.root_if = [f"fc{tag}r{i}" for i in (1, 2, 3)]  # <= 15 characters
        self.ns_if = [f"fc{tag}n{i}" for i in (1, 2, 3)]
        self.hosts = [f"10.201.{self.octet}.{4 * i + 2}" for i in (1, 2, 3)]
        self.gateways = [f"10.201.{self.octet}.{4 * i + 1}" for i in (1, 2, 3)]
        self.port = 8000
        self.made_ns: list[str] = []
        self.made_if: list[str] = []
        self.made_route = False
        self.instances = []
        try:
            self._make()
        except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as e:
            why = getattr(e, "stderr", "") or str(e)
            self.cleanup()
            pytest.skip(f"network namespaces cannot be made here ({why.strip()}); "
                        "the loopback case (127.0.0.2/.3/.4) covers the balancing")
        self.instances = [
            start_instance(factory, n, h, self.port, prefix=["ip", "netns", "exec", ns])
            for n, h, ns in zip(self.names, self.hosts, self.ns)
        ]

    def _make(self):
        # traffic to the test's /24 never leaves by the default route, even with a link down
        ip("route", "add", "unreachable", self.net, "metric", "4000")
        self.made_route = True
        for ns, rif, nif, host, gw in zip(self.ns, self.root_if, self.ns_if, self.hosts, self.gateways):
            ip("netns", "add", ns)
            self.made_ns.append(ns)
            ip("link", "add", rif, "type", "veth", "peer", "name", nif, "netns", ns)
            self.made_if.append(rif)
            ip("addr", "add", f"{gw}/30", "dev", rif)
            ip("link", "set", rif, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{host}/30", "dev", nif)
            ip("-n", ns, "link", "set", nif, "up")
        # the links are up (carrier) before the instances bind
        for rif in self.root_if:
            wait_until(lambda rif=rif: "LOWER_UP" in ip("link", "show", rif).stdout, timeout=5,
                       msg=f"{rif} carrier")

    def addr(self, i) -> str:
        return f"{self.hosts[i]}:{self.port}"

    def down(self, i):
        ip("-n", self.ns[i], "link", "set", self.ns_if[i], "down")

    def up(self, i):
        ip("-n", self.ns[i], "link", "set", self.ns_if[i], "up")

    def cleanup(self):
        for srv in self.instances:  # by PID, before the namespace goes
            srv.stop()
        for rif in self.made_if:  # deleting one end of a veth pair deletes both
            ip("link", "del", rif, check=False)
        for ns in self.made_ns:
            ip("netns", "del", ns, check=False)
        if self.made_route:
            ip("route", "del", "unreachable", self.net, "metric", "4000", check=False)


@pytest.fixture(params=["netns", "loopback"])
def hosts(request):
    factory = ServerFactory()
    made = None
    try:
        made = (NetnsHosts if request.param == "netns" else LoopbackHosts)(factory)
        yield made, factory
    finally:
        factory.stop_all()
        if made is not None:
            made.cleanup()


class Load:
    """CLIENTS threads sending GETs through the balancer: (start, end, status, upstream or error)."""

    def __init__(self, url: str):
        self.url = url
        self.results: list[tuple[float, float, int, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def run(self):
        with requests.Session() as s:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = s.get(f"{self.url}/whoami", timeout=10)
                    self.results.append((t0, time.monotonic(), r.status_code, r.headers.get("X-Upstream", "?")))
                except requests.RequestException as e:
                    self.results.append((t0, time.monotonic(), 0, repr(e)))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not stop"


class FailureLog:
    """Watches the balancer's log: when each 'upstream ADDR failed' line for one upstream showed."""

    def __init__(self, lb, addr: str):
        self.lb = lb
        self.rx = re.compile(r"upstream %s failed" % re.escape(addr))
        self.seen: list[float] = []  # monotonic time each new line was first seen
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def count(self) -> int:
        return len(self.rx.findall(self.lb.stderr_text()))

    def run(self):
        while not self.stop.is_set():
            n = self.count()
            now = time.monotonic()
            while len(self.seen) < n:
                self.seen.append(now)
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.thread.join(5)


def test_a_host_goes_down_and_up_under_load_and_no_request_is_lost(hosts):
    h, factory = hosts
    ups = []
    for i in range(3):
        ups += ["--upstream", f"{h.addr(i)} max_fails=1 fail_timeout={FAIL_TIMEOUT:g}s"]
    lb = factory(
        None, "-w", 1, *ups,
        "--upstream-connect-timeout", CONNECT_TIMEOUT, "--upstream-timeout", UPSTREAM_TIMEOUT,
        "--upstream-keepalive-timeout", 5,  # below the instances' --keep-alive 10
        cmd=ferrocorn_cmd() + ["balance"],
    )
    victim = h.names[VICTIM]
    failures = FailureLog(lb, h.addr(VICTIM))
    load = Load(lb.url)
    timeline = {}
    try:
        time.sleep(1.0)
        seen = Counter(n for _, _, s, n in load.results if s == 200)
        assert set(seen) == set(h.names), f"not every host served before the test: {seen}"

        timeline["down"] = time.monotonic()
        h.down(VICTIM)
        try:
            wait_until(lambda: failures.seen, timeout=5 + UPSTREAM_TIMEOUT,
                       msg=f"the balancer marking {victim} failed")
        except AssertionError as e:
            recent = [(round(t0 - timeline["down"], 2), round(t1 - t0, 2), s, n) for t0, t1, s, n in load.results
                      if t0 > timeline["down"] - 0.2]
            raise AssertionError(
                f"[{h.kind}] {e}; balancer exit code {lb.returncode}\nrequests since: {recent[:40]}\n"
                f"{lb.stderr_text()[-3000:]}"
            ) from None
        timeline["marked"] = failures.seen[0]
        # out for fail_timeout from its last failure; bring it up a little before that
        time.sleep(max(0.0, timeline["marked"] + FAIL_TIMEOUT - 0.5 - time.monotonic()))
        timeline["up"] = time.monotonic()
        h.up(VICTIM)
        timeline["upped"] = time.monotonic()
        wait_until(
            lambda: any(n == victim and t0 > timeline["upped"] for t0, _, s, n in load.results if s == 200),
            timeout=2 * FAIL_TIMEOUT + 3, msg=f"{victim} getting requests again",
        )
        timeline["back"] = time.monotonic()
        time.sleep(0.5)
    finally:
        load.finish()
        failures.finish()
        # first: the instances then have no idle connection from it to wait for when they stop
        lb.stop()

    res = sorted(load.results)
    rel = lambda t: f"{t - timeline['down']:+.2f}s"  # noqa: E731
    story = (f"[{h.kind}] victim {victim} ({h.addr(VICTIM)}); " +
             ", ".join(f"{k} {rel(v)}" for k, v in timeline.items()) +
             f"; failure lines at {[rel(t) for t in failures.seen]}; {len(res)} requests")

    # 1. no request lost: every one answered 200, those in flight on the host included
    lost = [(rel(t0), s, n) for t0, _, s, n in res if s != 200]
    assert not lost, (f"{len(lost)} requests not answered 200: {lost[:10]}\n{story}; "
                      f"balancer exit code {lb.returncode}\n{lb.stderr_text()[-3000:]}")

    # 2. once marked failed, the host is not tried until fail_timeout has passed: no request
    #    answered by it, no further failed attempt logged (past those in flight when it went
    #    down, which end within UPSTREAM_TIMEOUT), and no request slowed by an attempt on it
    marked, upped = timeline["marked"], timeline["up"]
    by_victim = [rel(t0) for t0, _, s, n in res if n == victim and marked < t0 < upped]
    assert not by_victim, f"{victim} answered requests while down: {by_victim}\n{story}"
    quiet_from = marked + UPSTREAM_TIMEOUT + 0.3
    late_failures = [rel(t) for t in failures.seen if quiet_from <= t <= upped]
    assert not late_failures, f"{victim} tried again while marked failed: {late_failures}\n{story}"
    slow = [(rel(t0), round(t1 - t0, 2), n) for t0, t1, s, n in res
            if marked + 0.1 <= t0 and t1 <= upped and t1 - t0 >= CONNECT_TIMEOUT * 0.9]
    assert not slow, f"requests slowed by an attempt on {victim} while it was marked failed: {slow}\n{story}"

    # 3. back: it gets requests again, and its share is not nothing
    after = Counter(n for t0, _, s, n in res if t0 > timeline["back"])
    assert after[victim] > 0, f"{victim} got nothing after coming back: {after}\n{story}"
    print(story, "| after back:", dict(after))
