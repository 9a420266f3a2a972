"""The load balancer's metrics per upstream and `ferrocorn ctl upstreams`: a real balancer
with ``--metrics-bind`` and a control socket, in front of real upstream processes.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import pytest
import requests

from apps.obs.obshelpers import METRICS_RE, ctl, metric_snapshot, top_under_load, value, wait_until
from conftest import ferrocorn_cmd
from test_balance import free_port, kill_instance, start_upstream, upstream_arg, who

pytest.importorskip("prometheus_client", reason="pip install prometheus_client (requirements-test.txt)")


def start_metered_balancer(server, sock, *args, workers=2):
    lb = server(
        None, "-w", workers, "--metrics-bind", "127.0.0.1:0", "--control-socket", sock, *args,
        cmd=ferrocorn_cmd() + ["balance"],
    )
    m = lb.wait_log(METRICS_RE.pattern, timeout=10)
    lb.metrics_url = f"http://{m.group(1)}/metrics"
    wait_until(lambda: sock.exists(), 10, "control socket")
    return lb


def test_upstream_counters_failures_and_states(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    a = start_upstream(server, "a")
    b = start_upstream(server, "b")
    dead = free_port()
    lb = start_metered_balancer(
        server, sock,
        "--upstream", upstream_arg(a), "--upstream", upstream_arg(b),
        "--upstream", f"127.0.0.1:{dead} max_fails=1 fail_timeout=30s",
    )
    with requests.Session() as s:
        for _ in range(30):
            assert s.get(f"{lb.url}/whoami").status_code == 200

    def scraped():
        snap = metric_snapshot(lb)
        total = sum(value(snap, "ferrocorn_upstream_requests_total", upstream=u)
                    for u in (f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"))
        return snap if total >= 30 else None

    snap = wait_until(scraped, 5, "30 attempts counted")
    dead_name = f"127.0.0.1:{dead}"
    # every connect to the dead one failed with "error" and went on to another upstream
    failed = value(snap, "ferrocorn_upstream_failures_total", upstream=dead_name, reason="error")
    assert failed >= 1
    assert value(snap, "ferrocorn_upstream_retries_total", upstream=dead_name) == failed
    assert value(snap, "ferrocorn_upstream_requests_total", upstream=dead_name) == failed
    answered = value(snap, "ferrocorn_upstream_response_seconds_count", upstream=f"127.0.0.1:{a.port}")
    assert answered == value(snap, "ferrocorn_upstream_requests_total", upstream=f"127.0.0.1:{a.port}")
    assert value(snap, "ferrocorn_upstream_active_requests", upstream=f"127.0.0.1:{a.port}") == 0
    # each of the 2 workers publishes what it sees (every 250 ms): the dead one is failed for
    # whoever tried it
    snap = wait_until(
        lambda: (lambda sn: sn if value(sn, "ferrocorn_upstream_state", upstream=dead_name,
                                        state="failed") >= 1 else None)(metric_snapshot(lb)),
        5, "failed published",
    )
    up_a = value(snap, "ferrocorn_upstream_state", upstream=f"127.0.0.1:{a.port}", state="up")
    assert up_a == 2

    listed = ctl(sock, "upstreams", json_out=True).data
    names = [u["upstream"] for u in listed["upstreams"]]
    assert names == [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}", dead_name]
    table = ctl(sock, "upstreams").stdout
    assert "UPSTREAM" in table and dead_name in table and "failed" in table


def test_ctl_drains_and_restores_an_upstream_without_a_reload(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    a = start_upstream(server, "a")
    b = start_upstream(server, "b")
    lb = start_metered_balancer(server, sock, "--upstream", upstream_arg(a), "--upstream", upstream_arg(b))
    out = ctl(sock, "upstreams", "drain", f"127.0.0.1:{a.port}").stdout
    assert "drain" in out
    with requests.Session() as s:
        seen = Counter(who(s.get(f"{lb.url}/whoami")) for _ in range(20))
    assert seen == {"b": 20}
    snap = wait_until(
        lambda: (lambda sn: sn if value(sn, "ferrocorn_upstream_state", upstream=f"127.0.0.1:{a.port}",
                                        state="draining") >= 1 else None)(metric_snapshot(lb)),
        5, "draining published",
    )
    assert snap
    ctl(sock, "upstreams", "up", f"127.0.0.1:{a.port}")
    ctl(sock, "upstreams", "weight", f"127.0.0.1:{b.port}", "3")
    with requests.Session() as s:
        seen = Counter(who(s.get(f"{lb.url}/whoami")) for _ in range(40))
    assert seen["a"] >= 4 and seen["b"] > seen["a"], seen
    bad = ctl(sock, "upstreams", "drain", "10.0.0.1:1", check=False)
    assert bad.returncode == 1 and "no upstream" in bad.stderr


def test_ctl_upstreams_on_an_app_server_says_it_is_not_a_balancer(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    server("upstream_app:app", "--control-socket", sock)
    wait_until(lambda: sock.exists(), 10, "control socket")
    p = ctl(sock, "upstreams", check=False)
    assert p.returncode == 1 and "not a load balancer" in p.stderr


def test_a_killed_upstream_shows_failed_then_up_again(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    port = free_port()
    a = start_upstream(server, "a", port)
    b = start_upstream(server, "b")
    lb = start_metered_balancer(
        server, sock, "--upstream", f"127.0.0.1:{port} fail_timeout=1s", "--upstream", upstream_arg(b),
        workers=1,
    )
    kill_instance(a)
    with requests.Session() as s:
        for _ in range(4):
            assert s.get(f"{lb.url}/whoami").status_code == 200
    name = f"127.0.0.1:{port}"
    wait_until(lambda: value(metric_snapshot(lb), "ferrocorn_upstream_state", upstream=name, state="failed") == 1,
               5, "failed published")
    start_upstream(server, "a", port)
    with requests.Session() as s:
        def back():
            s.get(f"{lb.url}/whoami")
            return value(metric_snapshot(lb), "ferrocorn_upstream_state", upstream=name, state="up") == 1
        wait_until(back, 10, "up again")


def test_a_reload_keeps_each_upstream_s_counters_by_name_and_returns_to_the_configuration(server, tmp_path):
    """Rows follow their upstream by name across a HUP with a reordered list: `a`'s request
    counter goes on from where it was, `c` (new) starts at zero, and the operator's override
    (`b` down) is dropped, as a reload of nginx or HAProxy returns to the configuration."""
    sock = tmp_path / "ctl.sock"
    a, b, c = (start_upstream(server, n) for n in "abc")
    name = {u: f"127.0.0.1:{u.port}" for u in (a, b, c)}
    conf = tmp_path / "lb.conf.py"
    conf.write_text(f"upstreams = {[name[a], name[b]]!r}\n")
    lb = start_metered_balancer(server, sock, "-c", conf)
    ctl(sock, "upstreams", "down", name[b])
    with requests.Session() as s:
        assert Counter(who(s.get(f"{lb.url}/whoami")) for _ in range(20)) == {"a": 20}
    before = wait_until(
        lambda: (lambda sn: sn if value(sn, "ferrocorn_upstream_requests_total", upstream=name[a]) >= 20
                 else None)(metric_snapshot(lb)), 5, "20 requests to a counted")
    a_before = value(before, "ferrocorn_upstream_requests_total", upstream=name[a])

    conf.write_text(f"upstreams = {[name[b], name[a], name[c]]!r}\n")  # every row moves
    lb.send_signal(signal.SIGHUP)
    wait_until(lambda: [u["upstream"] for u in ctl(sock, "upstreams", json_out=True).data["upstreams"]]
               == [name[b], name[a], name[c]] or None, 10, "the new list")
    wait_until(lambda: lb.log_text().count("Booting worker") >= 4 or None, 10, "new workers")
    snap = wait_until(
        lambda: (lambda sn: sn if value(sn, "ferrocorn_upstream_state", upstream=name[b], state="up") == 2
                 else None)(metric_snapshot(lb)), 5, "b up again in both new workers")
    assert value(snap, "ferrocorn_upstream_requests_total", upstream=name[a]) == a_before
    assert value(snap, "ferrocorn_upstream_requests_total", upstream=name[b]) == 0
    assert value(snap, "ferrocorn_upstream_requests_total", upstream=name[c]) == 0
    with requests.Session() as s:
        seen = Counter(who(s.get(f"{lb.url}/whoami")) for _ in range(30))
    assert seen == {"a": 10, "b": 10, "c": 10}, seen
    after = wait_until(
        lambda: (lambda sn: sn if value(sn, "ferrocorn_upstream_requests_total", upstream=name[c]) >= 10
                 else None)(metric_snapshot(lb)), 5, "the new requests counted")
    assert value(after, "ferrocorn_upstream_requests_total", upstream=name[a]) == a_before + 10


def test_top_shows_each_upstream_with_its_request_rate(server, tmp_path):
    """``ferrocorn top`` on a balancer: a table of the upstreams under the header, each with
    the rate of attempts sent to it between two frames while requests flow."""
    sock = tmp_path / "ctl.sock"
    a = start_upstream(server, "a")
    b = start_upstream(server, "b")
    lb = start_metered_balancer(server, sock, "--upstream", upstream_arg(a), "--upstream", upstream_arg(b))
    def whoami(s):
        assert s.get(f"{lb.url}/whoami", timeout=10).status_code == 200

    p = top_under_load(sock, whoami)
    last = p.stdout.rstrip().split("\n\n")[-2:]  # the last frame: header, upstreams, workers
    text = "\n".join(last)
    assert re.search(r"^UPSTREAM\s+STATE\s+RPS\s+REQUESTS", text, re.M), p.stdout
    for upstream in (a, b):
        row = re.search(rf"^127\.0\.0\.1:{upstream.port}\s+up×2\s+([\d.]+)\s", text, re.M)
        assert row and float(row.group(1)) > 0, (upstream.port, p.stdout)


def test_one_worker_runs_the_health_checks_for_the_instance(server, tmp_path):
    """With ``-w 3`` the upstreams get one check per interval, not three: the holder of the
    prober lease checks and the other workers adopt its verdicts. SIGKILLed, it is replaced
    by another worker within the lease; a sick upstream is then out of service in every
    worker."""
    sock = tmp_path / "ctl.sock"
    checks = tmp_path / "checks.log"
    sick = tmp_path / "sick"
    a = start_upstream(server, "a", env={"HEALTH_LOG": str(checks), "HEALTH_FILE": str(sick)})
    b = start_upstream(server, "b")
    lb = start_metered_balancer(
        server, sock, "--upstream", upstream_arg(a), "--upstream", upstream_arg(b),
        "--health-check", "GET /healthz interval=200ms timeout=500ms fall=2 rise=2", workers=3,
    )

    def prober():
        listed = ctl(sock, "upstreams", json_out=True).data
        return listed["health_check_pid"]

    def workers():
        return {w["pid"] for w in ctl(sock, "workers", json_out=True).data["workers"]}

    first = wait_until(lambda: prober() in workers() and prober(), 10, "a prober among the workers")

    def checks_in(seconds):
        before = len(checks.read_text().splitlines())
        time.sleep(seconds)
        return len(checks.read_text().splitlines()) - before

    # 2 s at one check per 200 ms: 10 for one prober, 30 if each of the 3 workers checked
    counted = checks_in(2.0)
    assert 5 <= counted <= 14, counted

    os.kill(first, signal.SIGKILL)
    # the lease lapses within 2 intervals + the timeout + 1 s = 1.9 s, then another worker takes it
    second = wait_until(lambda: (lambda p: p if p not in (None, first) and p in workers() else None)(prober()),
                        10, "another worker probing")
    assert second != first
    counted = checks_in(2.0)
    assert 5 <= counted <= 14, counted

    sick.write_text("1")
    unhealthy = wait_until(
        lambda: (lambda u: u if u["states"].get("unhealthy") == 3 else None)(
            ctl(sock, "upstreams", json_out=True).data["upstreams"][0]),
        10, "every worker sees a unhealthy")
    assert unhealthy["upstream"] == f"127.0.0.1:{a.port}"
    seen = Counter()
    for _ in range(12):  # new connections, spread over the workers
        seen[who(requests.get(f"{lb.url}/whoami", headers={"Connection": "close"}, timeout=10))] += 1
    assert seen == {"b": 12}, seen
