"""Worker pools by URL (`--pool`): one server whose `/reports/` requests go to a pool of sync
workers running one app while everything else goes to gevent workers running another, as the
chapter's nginx + two Gunicorn instances do. Real server processes, real clients.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest

from apps.obs.obshelpers import ctl
from procs import children, wait_until

pytest.importorskip("gevent", reason="pip install gevent (requirements-test.txt)")

REPORTS = "/reports/ app=pools_app:reports worker_class=sync workers=2 timeout=30"


def start_pools(server, *args, reports=REPORTS, workers=1):
    return server("pools_app:site", "-w", workers, "-k", "gevent", "--pool", reports, *args)


def get(port, path, headers=""):
    """One request on a new connection; the parsed JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def workers_by_pool(master_pid) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for pid in children(master_pid):
        try:
            title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        pool = title.split(" pool ", 1)[1].strip() if " pool " in title else "/"
        out.setdefault(pool, []).append(pid)
    return out


def test_requests_go_to_their_pool_with_its_own_worker_class(server):
    srv = start_pools(server)
    site = get(srv.port, "/shop/cart?x=1")
    report = get(srv.port, "/reports/daily")
    assert site["app"] == "site" and site["how"] == "gevent"
    assert report["app"] == "reports" and report["how"].startswith("thread:")
    assert site["pid"] != report["pid"]
    # The pool's app sees the request as if it came straight in: full path, the client's
    # address, the public port, and no trace of the inside hop.
    assert report["path"] == "/reports/daily" and report["script_name"] == ""
    assert report["remote_addr"] == "127.0.0.1" and report["remote_port"].isdigit()
    assert report["server_port"] == str(srv.port) and report["scheme"] == "http"
    assert report["xff"] is None and report["pool_client"] is None
    assert get(srv.port, "/reports")["app"] == "site"  # the prefix is "/reports/"
    pools = wait_until(lambda: (lambda p: p if len(p.get("/reports/", [])) == 2 else None)(
        workers_by_pool(srv.proc.pid)), 10, "2 report workers")
    assert len(pools["/"]) == 1
    # Each pool's workers are titled with their own app.
    title = open(f"/proc/{pools['/reports/'][0]}/cmdline", "rb").read().replace(b"\0", b" ")
    assert b"[pools_app:reports] pool /reports/" in title, title


def test_a_spoofed_client_header_is_not_believed(server):
    srv = start_pools(server)
    report = get(srv.port, "/reports/x", "X-Ferrocorn-Pool-Client: 6.6.6.6 1 https\r\n")
    assert report["remote_addr"] == "127.0.0.1" and report["scheme"] == "http"
    assert report["pool_client"] is None


def test_one_keep_alive_connection_carries_requests_for_both_pools(server):
    srv = start_pools(server)
    seen = []
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as c:
        for path in ["/a", "/reports/1", "/b", "/reports/2", "/c"]:
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                          if ln.lower().startswith(b"content-length")][0])
            while len(body) < length:
                body += c.recv(65536)
            assert b"Connection: close" not in head
            seen.append(json.loads(body)["app"])
    assert seen == ["site", "reports", "site", "reports", "site"]


def test_a_slow_report_never_delays_the_site(server):
    srv = start_pools(server, reports="/reports/ app=pools_app:reports worker_class=sync workers=1")
    done = []

    def slow():
        get(srv.port, "/reports/slow?sleep=3")
        done.append(("report", time.monotonic()))

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    for i in range(5):
        get(srv.port, f"/page/{i}")
        done.append(("site", time.monotonic()))
    t.join()
    order = [name for name, _ in done]
    # Every site request was answered while the report was still running.
    assert order == ["site"] * 5 + ["report"], order


def test_bad_pools_stop_the_start_naming_them(server):
    for spec, says in [
        ("/r/ wrokers=2", "wrokers"),
        ("r/ workers=2", "must start with /"),
        ("/r/ bind=127.0.0.1:1", "whole instance"),
        ("/r/ workers=x", "workers"),
    ]:
        srv = server("pools_app:site", "--pool", spec, expect_fail=True)
        assert srv.returncode != 0
        err = srv.stderr_text()
        assert "pool" in err and says in err, err
    srv = server("pools_app:site", "--pool", "/a/ workers=1", "--pool", "/a/ workers=2", expect_fail=True)
    assert "two pools have the prefix" in srv.stderr_text()


def test_ttin_acts_on_the_root_pool_and_ctl_on_the_named_one(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    srv = start_pools(server, "--control-socket", sock)
    wait_until(lambda: sock.exists(), 10, "control socket")

    def counts():
        pools = workers_by_pool(srv.proc.pid)
        return len(pools.get("/", [])), len(pools.get("/reports/", []))

    wait_until(lambda: counts() == (1, 2), 10, "1 + 2 workers")
    os.kill(srv.proc.pid, signal.SIGTTIN)
    wait_until(lambda: counts() == (2, 2), 10, "TTIN adds to /")
    ctl(sock, "workers", "add", "1", "--pool", "/reports/")
    wait_until(lambda: counts() == (2, 3), 10, "ctl adds to /reports/")
    ctl(sock, "workers", "remove", "2", "--pool", "/reports/")
    wait_until(lambda: counts() == (2, 1), 10, "ctl removes from /reports/")
    bad = ctl(sock, "workers", "add", "--pool", "/nope/", check=False)
    assert bad.returncode == 1 and "no pool" in bad.stderr


def test_a_killed_pool_worker_is_replaced_in_its_pool(server):
    srv = start_pools(server)
    pools = wait_until(lambda: (lambda p: p if len(p.get("/reports/", [])) == 2 else None)(
        workers_by_pool(srv.proc.pid)), 10, "2 report workers")
    victim = pools["/reports/"][0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: (lambda p: len(p.get("/reports/", [])) == 2 and victim not in p["/reports/"]
                        and len(p.get("/", [])) == 1)(workers_by_pool(srv.proc.pid)), 10, "replaced")
    assert get(srv.port, "/reports/again")["app"] == "reports"


def test_pools_from_a_config_file_as_dicts(server, tmp_path):
    conf = tmp_path / "pools.conf.py"
    conf.write_text(
        "pools = [{'prefix': '/reports/', 'app': 'pools_app:reports', 'worker_class': 'sync',"
        " 'workers': 1}]\nworker_class = 'gevent'\n"
    )
    srv = server("pools_app:site", "-c", conf)
    assert get(srv.port, "/reports/x")["app"] == "reports"
    assert get(srv.port, "/x")["how"] == "gevent"


def test_hooks_see_which_pool_a_worker_serves(server, tmp_path):
    seen = tmp_path / "pools.txt"
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(
        "def post_fork(server, worker):\n"
        f"    open({str(seen)!r}, 'a').write(worker.pool + chr(10))\n"
    )
    start_pools(server, "-c", conf)
    wait_until(lambda: seen.exists() and len(seen.read_text().split()) == 3, 10, "3 post_fork calls")
    assert sorted(seen.read_text().split()) == ["/", "/reports/", "/reports/"]


def test_each_pool_has_its_own_metrics(server):
    pytest.importorskip("prometheus_client")
    from apps.obs.obshelpers import METRICS_RE, metric_snapshot, value

    srv = start_pools(server, "--metrics-bind", "127.0.0.1:0")
    srv.metrics_url = f"http://{srv.wait_log(METRICS_RE.pattern, timeout=10).group(1)}/metrics"
    for _ in range(3):
        get(srv.port, "/reports/x")
    get(srv.port, "/y")

    def scraped():
        snap = metric_snapshot(srv)
        ok = (value(snap, "ferrocorn_pool_requests_total", pool="/reports/") == 3
              and value(snap, "ferrocorn_pool_requests_total", pool="/") == 1
              and value(snap, "ferrocorn_pool_workers", pool="/reports/") == 2)
        return snap if ok else None

    snap = wait_until(scraped, 10, "pool metrics")
    assert value(snap, "ferrocorn_pool_workers", pool="/") == 1
    # The inside hop is not counted twice: 4 requests in all.
    assert value(snap, "ferrocorn_requests_total") == 4


def test_a_reload_changes_a_pools_settings_and_keeps_routing(server, tmp_path):
    conf = tmp_path / "reload.conf.py"
    conf.write_text("pools = ['/reports/ app=pools_app:reports worker_class=sync workers=1']\n")
    srv = server("pools_app:site", "-c", conf)

    def count():
        return len(workers_by_pool(srv.proc.pid).get("/reports/", []))

    wait_until(lambda: count() == 1, 10, "1 report worker")
    conf.write_text("pools = ['/reports/ app=pools_app:reports worker_class=sync workers=3']\n")
    os.kill(srv.proc.pid, signal.SIGHUP)
    wait_until(lambda: count() == 3, 15, "3 report workers after HUP")
    assert get(srv.port, "/reports/x")["app"] == "reports"
    assert get(srv.port, "/x")["app"] == "site"
    conf.write_text("pools = ['/other/ app=pools_app:reports workers=1']\n")
    os.kill(srv.proc.pid, signal.SIGHUP)
    srv.wait_log(r"prefixes changed", timeout=10)
    assert get(srv.port, "/reports/x")["app"] == "reports"


def test_the_root_pool_accepts_as_without_pools(server):
    # A sync `/` worker holding an idle keep-alive connection must still take the next one:
    # the other pools' idle workers never accept on the public listener, so they are not its
    # siblings (they were counted as such once, and new clients waited for the keep-alive
    # timeout).
    srv = start_pools(server, "-k", "sync", "--keep-alive", "30",
                      reports="/reports/ app=pools_app:reports worker_class=sync workers=2")
    held = []
    try:
        for i in range(4):
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            c.sendall(f"GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = c.recv(65536)  # answered well within the 30 s keep-alive of the others
            assert data.startswith(b"HTTP/1.1 200"), data[:100]
            held.append(c)
    finally:
        for c in held:
            c.close()
