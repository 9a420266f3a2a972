"""Worker lifecycle: timeouts, boot failures, max-requests, kill -9, preload, worker count."""

import os
import re
import shutil
import signal
import time

import pytest

from apps.master.helpers import (
    APP,
    MASTER_DIR,
    Load,
    booted_pids,
    get_pid,
    pid_alive,
    serving_pids,
    wait_until,
    wait_workers,
)
from conftest import ferrocorn_cmd, wait_for_file
from wire import Conn, request_bytes


def start(server, *args, state=None, env=None, app=APP, **kw):
    e = dict(env or {})
    if state is not None:
        e["STATE_DIR"] = str(state)
    return server(app, *args, env=e, cwd=kw.pop("cwd", MASTER_DIR), **kw)


# --- timeouts -----------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["/hang", "/busy"])
def test_request_timeout_kills_and_replaces_worker(server, state_dir, route):
    srv = start(server, "-w", "1", "-t", "2", state=state_dir)
    master = srv.proc.pid
    (old,) = wait_workers(master, 1)
    c = Conn(srv.port, timeout=30)
    try:
        c.send(request_bytes("GET", route))
        name = route.strip("/") + "-started"
        assert wait_for_file(state_dir / name, 10)
        srv.wait_log(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=15)
        wait_until(lambda: not pid_alive(old), 15, "timed-out worker gone")
        (new,) = wait_workers(master, 1, timeout=15, exclude=(old,))
    finally:
        c.close()
    assert new != old
    assert get_pid(srv.url) == new
    assert srv.returncode is None


def test_boot_timeout_kills_hung_import(server, state_dir):
    srv = start(server, "-w", "1", "--boot-timeout", "2", state=state_dir, app="boot_hang:app")
    master = srv.proc.pid
    m = srv.wait_log(r"WORKER BOOT TIMEOUT \(pid:(\d+)\)", timeout=20)
    hung = int(m.group(1))
    assert (state_dir / "boot-hang-once").read_text().strip() == str(hung)
    wait_until(lambda: not pid_alive(hung), 10, "hung worker killed")
    (new,) = wait_workers(master, 1, timeout=15, exclude=(hung,))
    assert get_pid(srv.url) == new
    assert srv.returncode is None


# --- boot failures ----------------------------------------------------------------------------
@pytest.mark.parametrize("hook", ["post_fork", "post_worker_init"])
def test_exception_in_worker_boot_hook_stops_master_with_3(server, tmp_path, hook):
    srv = server(
        APP,
        "-c",
        str(MASTER_DIR / "hooks_conf.py"),
        "-w",
        "2",
        env={"HOOK_FAIL": hook, "HOOK_LOG": str(tmp_path / "h.jsonl")},
        cwd=MASTER_DIR,
        expect_fail=True,
    )
    assert srv.returncode == 3, srv.stderr_text()
    assert hook in srv.stderr_text() or "boot" in srv.stderr_text().lower(), srv.stderr_text()


def test_workers_dying_during_boot_stop_master_with_3(server):
    srv = start(server, "-w", "1", app="exit_at_import:app", expect_fail=True)
    assert srv.returncode == 3, srv.stderr_text()
    assert len(booted_pids(srv.stderr_text())) >= 5, srv.stderr_text()


@pytest.mark.parametrize(
    "app, needle",
    [
        ("no_such_module_xyz:app", "no_such_module_xyz"),
        ("syntax_error_app:app", "syntax_error_app"),
        ("mapp:no_such_attribute", "no_such_attribute"),
    ],
)
def test_app_import_error_stops_master_with_4(server, app, needle):
    srv = start(server, "-w", "2", app=app, expect_fail=True)
    assert srv.returncode == 4, srv.stderr_text()
    assert needle in srv.stderr_text(), srv.stderr_text()


# --- max requests -----------------------------------------------------------------------------
def test_max_requests_under_load_no_failures(server):
    srv = start(server, "-w", "2", "--max-requests", "50", "--max-requests-jitter", "10")
    load = Load(srv.url, threads=8, total=1500).start().join()
    assert load.failures == [], f"{len(load.failures)} failed of {load.issued}: {load.failures[:5]}"
    assert load.ok == 1500
    pids = set(load.pids)
    # 1500 requests / at most 60 per worker -> at least 25 workers; be lenient
    assert len(pids) >= 10, pids
    err = srv.stderr_text()
    assert "Autorestarting worker after current request." in err
    assert len(booted_pids(err)) >= 10
    wait_workers(srv.proc.pid, 2, timeout=15)


def test_max_requests_jitter_bounds(server):
    """Each worker serves between N and N+J requests (sequential requests, -w 1).

    After the first request of each new worker the test pauses ~1.2 s so the master has
    observed the worker as booted (see test_fast_max_requests_recycling_keeps_serving).
    """
    srv = start(server, "-w", "1", "--max-requests", "2", "--max-requests-jitter", "6")
    runs = []
    deadline = time.monotonic() + 60
    while len(runs) < 6 and time.monotonic() < deadline:
        pid = get_pid(srv.url)
        if runs and runs[-1][0] == pid:
            runs[-1][1] += 1
        else:
            runs.append([pid, 1])
            time.sleep(1.2)
    full = [n for _, n in runs[:-1]]  # the last worker may not have reached its limit
    assert len(full) >= 5, runs
    assert all(2 <= n <= 8 for n in full), runs
    assert len(set(full)) > 1, f"jitter had no effect: {full}"
    assert len({p for p, _ in runs}) == len(runs), "a retired worker served again"


def test_fast_max_requests_recycling_keeps_serving(server):
    """Workers retiring quickly via max_requests are not boot failures.

    Every worker here boots, serves 2 requests and retires within milliseconds; the master
    must keep replacing them (Gunicorn counts nothing against boot here) and never halt.
    """
    srv = start(server, "-w", "1", "--max-requests", "2")
    pids, failures = [], []
    for _ in range(40):
        try:
            pids.append(get_pid(srv.url))
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e)[:200])
    assert failures == [], f"{len(failures)} of 40 failed; master rc={srv.returncode}; log:\n{srv.stderr_text()[-1500:]}"
    assert len(set(pids)) >= 15
    assert srv.returncode is None
    assert "died while booting" not in srv.stderr_text()


def test_max_requests_keepalive_connection_gets_close(server):
    srv = start(server, "-w", "1", "--max-requests", "3")
    master = srv.proc.pid
    (old,) = wait_workers(master, 1)
    statuses, closes, bodies = [], [], []
    with Conn(srv.port, timeout=10) as c:
        for _ in range(4):
            c.send(request_bytes("GET", "/"))
            r = c.read_response(timeout=10)
            statuses.append(r.status)
            bodies.append(r.body)
            closes.append((r.header("Connection") or "").lower() == "close")
            if closes[-1]:
                break
    assert all(s == 200 for s in statuses)
    assert closes[-1], f"no 'Connection: close' within max_requests+1 keep-alive responses: {closes}"
    assert all(b == str(old).encode() for b in bodies)
    srv.wait_log(r"Autorestarting worker after current request\.")
    wait_until(lambda: not pid_alive(old), 10, "retired worker exits")
    (new,) = wait_workers(master, 1, exclude=(old,))
    assert get_pid(srv.url) == new


# --- crashes ------------------------------------------------------------------------------------
def test_kill9_worker_is_replaced(server):
    srv = start(server, "-w", "2")
    master = srv.proc.pid
    workers = wait_workers(master, 2)
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    srv.wait_log(rf"Worker \(pid:{victim}\) was sent SIGKILL! Perhaps out of memory\?", timeout=10)
    now = wait_workers(master, 2, timeout=15, exclude=(victim,))
    assert workers[1] in now
    assert serving_pids(srv.url, 20) <= set(now)
    assert srv.returncode is None


def test_worker_crash_after_boot_is_replaced(server):
    srv = start(server, "-w", "1")
    master = srv.proc.pid
    (victim,) = wait_workers(master, 1)
    os.kill(victim, signal.SIGSEGV)
    (new,) = wait_workers(master, 1, timeout=15, exclude=(victim,))
    assert get_pid(srv.url) == new
    assert srv.returncode is None


# --- preload --------------------------------------------------------------------------------------
def _imports(state_dir):
    p = state_dir / "imports.log"
    return [int(x) for x in re.findall(r"import (\d+)", p.read_text())] if p.exists() else []


def test_preload_imports_once_in_master(server, state_dir):
    srv = start(server, "--preload", "-w", "3", "-e", f"STATE_DIR={state_dir}")
    master = srv.proc.pid
    workers = wait_workers(master, 3)
    serving_pids(srv.url, 10)
    assert _imports(state_dir) == [master]
    assert master not in workers


def test_no_preload_imports_in_each_worker(server, state_dir):
    srv = start(server, "-w", "3", "-e", f"STATE_DIR={state_dir}")
    master = srv.proc.pid
    workers = wait_workers(master, 3)
    wait_until(lambda: len(_imports(state_dir)) >= 3, 15, "3 imports")
    imports = _imports(state_dir)
    assert sorted(imports) == sorted(workers)
    assert master not in imports


# --- worker count ------------------------------------------------------------------------------------
@pytest.mark.skipif("WEB_CONCURRENCY" in os.environ, reason="WEB_CONCURRENCY set in the test environment")
def test_default_one_worker(server):
    srv = start(server)
    assert len(wait_workers(srv.proc.pid, 1)) == 1
    time.sleep(0.5)
    assert len(booted_pids(srv.stderr_text())) == 1


def test_web_concurrency_env(server):
    srv = start(server, env={"WEB_CONCURRENCY": "3"})
    wait_workers(srv.proc.pid, 3)


def test_cli_workers_beats_web_concurrency(server):
    srv = start(server, "-w", "2", env={"WEB_CONCURRENCY": "3"})
    wait_workers(srv.proc.pid, 2)
    time.sleep(0.5)
    assert len(booted_pids(srv.stderr_text())) == 2


@pytest.mark.skipif(not shutil.which("taskset"), reason="taskset not available")
def test_workers_auto_honours_affinity(server):
    srv = start(server, "-w", "auto", cmd=["taskset", "-c", "0"] + ferrocorn_cmd())
    wait_workers(srv.proc.pid, 3)
    time.sleep(0.5)
    assert len(booted_pids(srv.stderr_text())) == 3


def test_workers_auto_uses_usable_cpus(server):
    n = 2 * len(os.sched_getaffinity(0)) + 1
    # cgroup quota can lower it further; accept anything in [3, n]
    srv = start(server, "-w", "auto")
    wait_until(lambda: len(booted_pids(srv.stderr_text())) >= 3, 15, "auto workers")
    time.sleep(1.0)
    count = len(booted_pids(srv.stderr_text()))
    assert 3 <= count <= n, count
