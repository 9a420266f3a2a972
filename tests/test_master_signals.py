"""Signals to the master: TERM, INT, QUIT, HUP, TTIN, TTOU, USR1, USR2."""

import os
import signal
import socket
import time

import requests

from apps.master.helpers import (
    APP,
    MASTER_DIR,
    Load,
    children,
    get_pid,
    pid_alive,
    ppid_of,
    reaper,  # noqa: F401  (fixture)
    serving_pids,
    wait_until,
    wait_workers,
)
from conftest import wait_for_file
from wire import Conn, request_bytes


def start(server, *args, state=None, env=None, cwd=MASTER_DIR, app=APP, **kw):
    e = dict(env or {})
    if state is not None:
        e["STATE_DIR"] = str(state)
    return server(app, *args, env=e, cwd=cwd, **kw)


def test_term_graceful_finishes_inflight_then_exits_zero(server, state_dir):
    srv = start(server, "-w", "2", state=state_dir)
    master = srv.proc.pid
    workers = wait_workers(master, 2)
    with Conn(srv.port, timeout=20) as c:
        c.send(request_bytes("GET", "/slow?d=2"))
        assert wait_for_file(state_dir / "slow-started", 10), "slow request never started"
        srv.send_signal(signal.SIGTERM)
        r = c.read_response(timeout=20)
    assert r.status == 200 and r.body.startswith(b"slow done"), r
    assert srv.wait_exit(20) == 0, srv.stderr_text()
    err = srv.stderr_text()
    assert "Handling signal: term" in err
    assert "Shutting down: Master" in err
    for w in workers:
        assert f"Worker exiting (pid: {w})" in err, err
        assert not pid_alive(w)


def test_term_stops_accepting_new_connections(server, state_dir):
    srv = start(server, "-w", "1", state=state_dir)
    port = srv.port
    get_pid(srv.url)
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15) == 0
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        raise AssertionError("server still accepting after TERM exit")
    except requests.ConnectionError:
        pass


def test_term_while_replacement_worker_boots_exits_promptly(server):
    """TERM reaching the master just after it forked a replacement worker.

    The master forwards TERM to the freshly forked worker; that worker must still stop
    promptly (Gunicorn: default disposition or its TERM handler), not sit until the master
    gives up after --graceful-timeout and SIGKILLs it.
    """
    for delay in (0.002, 0.005, 0.01):
        srv = start(server, "-w", "1", "--graceful-timeout", "4")
        (w,) = wait_workers(srv.proc.pid, 1)
        get_pid(srv.url)
        os.kill(w, signal.SIGTERM)  # the master reaps it and forks a replacement at once
        time.sleep(delay)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        assert srv.wait_exit(15) == 0
        took = time.monotonic() - t0
        assert took < 2.5, (
            f"master needed {took:.1f}s (graceful timeout 4s) to stop after TERM sent {delay * 1000:.0f} ms "
            f"after a worker respawn; log:\n{srv.stderr_text()[-1500:]}"
        )
        assert "was sent SIGKILL" not in srv.stderr_text()


def test_int_is_quick(server, state_dir):
    srv = start(server, "-w", "1", state=state_dir)
    c = Conn(srv.port, timeout=30)
    try:
        c.send(request_bytes("GET", "/slow?d=30"))
        assert wait_for_file(state_dir / "slow-started", 10)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGINT)
        srv.wait_exit(10)
        assert time.monotonic() - t0 < 10
    finally:
        c.close()
    assert "Handling signal: int" in srv.stderr_text()
    assert not (state_dir / "slow-finished").exists()


def test_quit_is_quick(server, state_dir):
    srv = start(server, "-w", "1", state=state_dir)
    c = Conn(srv.port, timeout=30)
    try:
        c.send(request_bytes("GET", "/slow?d=30"))
        assert wait_for_file(state_dir / "slow-started", 10)
        srv.send_signal(signal.SIGQUIT)
        srv.wait_exit(10)
    finally:
        c.close()
    assert "Handling signal: quit" in srv.stderr_text()
    assert not (state_dir / "slow-finished").exists()


def test_ttin_ttou_change_worker_count(server):
    srv = start(server, "-w", "2")
    master = srv.proc.pid
    two = wait_workers(master, 2)
    srv.send_signal(signal.SIGTTIN)
    three = wait_workers(master, 3)
    assert set(two) < set(three)
    srv.wait_log(r"Handling signal: ttin")
    srv.send_signal(signal.SIGTTIN)
    four = wait_workers(master, 4)
    srv.send_signal(signal.SIGTTOU)
    srv.wait_log(r"Handling signal: ttou")
    three_b = wait_workers(master, 3)
    (gone,) = set(four) - set(three_b)
    assert gone in two, f"TTOU must retire the oldest worker; retired {gone}, originals {two}"
    srv.send_signal(signal.SIGTTOU)
    two_b = wait_workers(master, 2)
    (gone2,) = set(three_b) - set(two_b)
    assert gone2 in two, f"second TTOU must retire the other original worker: {gone2} {two}"
    assert serving_pids(srv.url, 20) <= set(two_b)


def test_hup_rereads_config_file(server, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\n")
    srv = start(server, "-c", str(conf))
    master = srv.proc.pid
    (old,) = wait_workers(master, 1)
    conf.write_text("workers = 3\n")
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(r"Handling signal: hup")
    new = wait_workers(master, 3, timeout=20)
    assert old not in new
    wait_until(lambda: not pid_alive(old), 10, "old worker retired")


def _write_app(path, text):
    path.write_text(
        "def app(environ, start_response):\n"
        f"    body = {text!r}.encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )


def test_hup_reloads_app_code_with_preload(server, tmp_path):
    mod = tmp_path / "hupapp.py"
    _write_app(mod, "v1")
    srv = start(server, "--preload", "-w", "1", cwd=tmp_path, app="hupapp:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert requests.get(srv.url, timeout=10).text == "v1"
    _write_app(mod, "version-two")
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: requests.get(srv.url, timeout=10).text == "version-two", 20, "new code after HUP")


def test_hup_reloads_app_code_without_preload(server, tmp_path):
    mod = tmp_path / "hupapp2.py"
    _write_app(mod, "v1")
    srv = start(server, "-w", "1", cwd=tmp_path, app="hupapp2:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert requests.get(srv.url, timeout=10).text == "v1"
    _write_app(mod, "version-two")
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: requests.get(srv.url, timeout=10).text == "version-two", 20, "new code after HUP")


def test_hup_under_load_no_failures(server):
    srv = start(server, "-w", "2")
    master = srv.proc.pid
    before = set(wait_workers(master, 2))
    load = Load(srv.url, threads=8, total=1500).start()
    for frac in (0.2, 0.45, 0.7):
        wait_until(lambda: load.done_fraction() >= frac, 60, f"load at {frac}")
        srv.send_signal(signal.SIGHUP)
    load.join()
    assert load.failures == [], f"{len(load.failures)} failed of {load.issued}: {load.failures[:5]}"
    assert load.ok == 1500
    after = set(wait_workers(master, 2, timeout=20))
    assert not (after & before), (before, after)
    assert serving_pids(srv.url, 20) <= after


def test_usr1_reopens_error_log(server, tmp_path):
    log = tmp_path / "error.log"
    srv = start(server, "-w", "1", "--error-logfile", str(log), log_path=log)
    get_pid(srv.url)
    rotated = tmp_path / "error.log.1"
    os.rename(log, rotated)
    srv.send_signal(signal.SIGUSR1)
    wait_until(lambda: log.exists(), 10, "new error log created at the original path")
    srv.send_signal(signal.SIGTTIN)  # produces a new master log line ("Booting worker ...")
    wait_until(lambda: "Booting worker" in log.read_text(), 10, "new lines in reopened log")
    assert "Handling signal: usr1" in rotated.read_text() + log.read_text()
    assert "Listening at" in rotated.read_text()
    assert "Listening at" not in log.read_text()


def test_usr1_reopens_logs_in_workers(server, tmp_path):
    log = tmp_path / "error.log"
    access = tmp_path / "access.log"
    srv = start(server, "-w", "2", "--error-logfile", str(log), "--access-logfile", str(access), log_path=log)
    master = srv.proc.pid
    workers = wait_workers(master, 2)
    get_pid(srv.url)
    wait_until(lambda: access.exists() and "GET / " in access.read_text(), 10, "first access line")
    os.rename(log, tmp_path / "error.log.1")
    os.rename(access, tmp_path / "access.log.1")
    srv.send_signal(signal.SIGUSR1)
    wait_until(lambda: log.exists(), 10, "new error log")
    time.sleep(0.5)  # let the workers handle their USR1 too
    # access lines are written by workers: they must land in the new file
    for _ in range(4):
        get_pid(srv.url)
    wait_until(lambda: access.exists() and "GET / " in access.read_text(), 10, "access log reopened by workers")
    # a worker's own log line ("Worker exiting") must land in the new error log
    srv.send_signal(signal.SIGTTOU)  # the oldest worker logs "Worker exiting" itself
    wait_until(lambda: "Worker exiting (pid:" in log.read_text(), 10, "worker line in reopened error log")
    assert str(workers[0]) in log.read_text() or str(workers[1]) in log.read_text()


def test_hup_resets_worker_count_changed_by_ttin(server):
    srv = start(server, "-w", "1")
    master = srv.proc.pid
    wait_workers(master, 1)
    srv.send_signal(signal.SIGTTIN)
    wait_workers(master, 2)
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(r"Handling signal: hup")
    time.sleep(1.0)
    wait_workers(master, 1, timeout=15)


def test_usr2_reexec_handover(server, tmp_path, reaper):  # noqa: F811
    pidfile = tmp_path / "master.pid"
    srv = start(server, "-w", "2", "--pid", str(pidfile))
    old_master = srv.proc.pid
    port = srv.port
    old_workers = set(wait_workers(old_master, 2))
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile")
    assert int(pidfile.read_text()) == old_master

    srv.send_signal(signal.SIGUSR2)
    srv.wait_log(r"Handling signal: usr2")
    pid2 = tmp_path / "master.pid.2"
    wait_until(lambda: pid2.exists() and pid2.read_text().strip(), 20, "master.pid.2")
    new_master = int(pid2.read_text())
    reaper.append(new_master)
    assert new_master != old_master
    assert ppid_of(new_master) == old_master, "the new master is a child of the old one"
    new_workers = set(wait_workers(new_master, 2, timeout=20))
    assert pid_alive(old_master)

    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(20) == 0, srv.stderr_text()
    assert all(not pid_alive(w) for w in old_workers)
    # the new master keeps serving on the same port
    pids = serving_pids(f"http://127.0.0.1:{port}", 20)
    assert pids <= new_workers, (pids, new_workers)
    assert pid_alive(new_master)
    # and promotes itself: pidfile renamed to the original name
    wait_until(
        lambda: pidfile.exists() and pidfile.read_text().strip() == str(new_master) and not pid2.exists(),
        5,
        "pidfile promoted to the new master",
    )
    assert set(children(new_master)) >= new_workers


def test_usr2_twice_and_rollback(server, tmp_path, reaper):  # noqa: F811
    """A second USR2 while a re-executed master exists is ignored; TERMing the new master
    rolls back: the old one keeps serving and the .2 pidfile goes away."""
    pidfile = tmp_path / "m.pid"
    srv = start(server, "-w", "1", "--pid", str(pidfile))
    old_master = srv.proc.pid
    (old_worker,) = wait_workers(old_master, 1)
    srv.send_signal(signal.SIGUSR2)
    pid2 = tmp_path / "m.pid.2"
    wait_until(lambda: pid2.exists() and pid2.read_text().strip(), 20, "m.pid.2")
    new_master = int(pid2.read_text())
    reaper.append(new_master)
    srv.send_signal(signal.SIGUSR2)
    time.sleep(1.0)
    masters = [c for c in children(old_master) if c not in wait_workers(old_master, 1) and pid_alive(c)]
    assert masters == [new_master], masters
    wait_workers(new_master, 1, timeout=20)
    os.kill(new_master, signal.SIGTERM)
    wait_until(lambda: not pid_alive(new_master), 15, "new master exits")
    wait_until(lambda: not pid2.exists(), 5, "m.pid.2 removed")
    assert int(pidfile.read_text()) == old_master
    assert srv.returncode is None
    assert get_pid(srv.url) == old_worker


def test_hup_applies_new_bind(server, tmp_path):
    s1, s2 = socket.socket(), socket.socket()
    s1.bind(("127.0.0.1", 0))
    s2.bind(("127.0.0.1", 0))
    p1, p2 = s1.getsockname()[1], s2.getsockname()[1]
    s1.close()
    s2.close()
    conf = tmp_path / "conf.py"
    conf.write_text(f"bind = ['127.0.0.1:{p1}']\n")
    srv = start(server, "-c", str(conf), bind=False)
    assert srv.port == p1
    get_pid(srv.url)
    conf.write_text(f"bind = ['127.0.0.1:{p2}']\n")
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: _serves(p2), 20, "new bind serves")
    wait_until(lambda: not _serves(p1), 10, "old bind closed")


def _serves(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=3).status_code == 200
    except requests.ConnectionError:
        return False


def test_winch_ignored_and_ttou_keeps_last_worker(server):
    srv = start(server, "-w", "1")
    master = srv.proc.pid
    (w,) = wait_workers(master, 1)
    srv.send_signal(signal.SIGWINCH)  # not daemonized: ignored
    srv.send_signal(signal.SIGTTOU)  # never below one worker
    time.sleep(1.5)
    assert wait_workers(master, 1) == [w]
    assert get_pid(srv.url) == w
    assert srv.returncode is None


def test_worker_killed_by_hup_is_replaced(server):
    """HUP sent to a worker (not the master) has its default action; the master respawns."""
    srv = start(server, "-w", "1")
    master = srv.proc.pid
    (w,) = wait_workers(master, 1)
    get_pid(srv.url)
    os.kill(w, signal.SIGHUP)
    (new,) = wait_workers(master, 1, timeout=15, exclude=(w,))
    assert get_pid(srv.url) == new
    assert srv.returncode is None
