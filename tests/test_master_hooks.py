"""Server hooks from a config file: firing order, process, and arguments."""

import json
import os
import signal
import time

import pytest
import requests

from apps.master.helpers import (
    APP,
    MASTER_DIR,
    get_pid,
    reaper,  # noqa: F401  (fixture)
    wait_until,
    wait_workers,
)
from conftest import wait_for_file
from wire import Conn, request_bytes

CONF = str(MASTER_DIR / "hooks_conf.py")


def read_hooks(path):
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def named(events, hook):
    return [e for e in events if e["hook"] == hook]


def wait_hook(path, hook, n=1, timeout=15.0):
    return wait_until(lambda: (lambda ev: ev if len(ev) >= n else None)(named(read_hooks(path), hook)), timeout, f"{n}x {hook}")


@pytest.fixture
def hooked(server, tmp_path):
    log = tmp_path / "hooks.jsonl"

    def start(*args, env=None, **kw):
        e = {"HOOK_LOG": str(log)}
        e.update(env or {})
        srv = server(APP, "-c", CONF, *args, env=e, cwd=MASTER_DIR, **kw)
        return srv, log

    return start


def test_startup_hooks_order_process_and_args(hooked):
    srv, log = hooked("-w", "2")
    master = srv.proc.pid
    wait_hook(log, "post_worker_init", 2)
    ev = read_hooks(log)
    hooks = [e["hook"] for e in ev]

    (starting,) = named(ev, "on_starting")
    (ready,) = named(ev, "when_ready")
    assert starting["pid"] == master and ready["pid"] == master
    assert starting["server_pid"] == master
    assert starting["cfg_workers"] == 2

    pre = named(ev, "pre_fork")
    assert len(pre) == 2
    for e in pre:
        assert e["pid"] == master
        assert e["worker_pid"] == "[booting]"
        assert isinstance(e["worker_age"], int)

    post = named(ev, "post_fork")
    assert len(post) == 2
    worker_pids = {e["pid"] for e in post}
    assert master not in worker_pids and len(worker_pids) == 2
    for e in post:
        assert e["worker_pid"] == e["pid"], e
        assert isinstance(e["worker_age"], int)

    init = named(ev, "post_worker_init")
    assert {e["pid"] for e in init} == worker_pids
    assert all(e["worker_has_log"] for e in init)
    assert all(e["worker_alive"] is True for e in init), init

    # first-event ordering
    first = {h: hooks.index(h) for h in ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init")}
    assert first["on_starting"] < first["when_ready"] < first["pre_fork"] < first["post_fork"] < first["post_worker_init"], hooks
    # per worker: post_fork before its post_worker_init
    for pid in worker_pids:
        idx = [i for i, e in enumerate(ev) if e["pid"] == pid]
        assert [ev[i]["hook"] for i in idx][:2] == ["post_fork", "post_worker_init"], [ev[i] for i in idx]

    nw = named(ev, "nworkers_changed")
    assert nw and nw[0]["new"] == 2 and nw[0]["old"] is None, nw
    assert all(e["pid"] == master for e in nw)

    # server.log.info from a hook goes to the error log with %-formatting applied
    srv.wait_log(r"\[INFO\] hook-log-check 42")


def test_request_hooks(hooked):
    srv, log = hooked()
    r = requests.get(srv.url + "/some/path?x=1", headers={"X-Custom-Thing": "abc"}, timeout=10)
    assert r.status_code == 200
    worker = int(r.text)
    (pre,) = wait_hook(log, "pre_request")
    (post,) = wait_hook(log, "post_request")
    assert pre["pid"] == worker and post["pid"] == worker
    assert pre["method"] == "GET"
    assert pre["path"] == "/some/path"
    headers = {k: v for k, v in pre["headers"]}
    assert headers.get("X-CUSTOM-THING") == "abc", pre["headers"]
    assert all(k == k.upper() for k, _ in pre["headers"]), pre["headers"]
    assert post["environ_is_dict"] is True
    assert post["path_info"] == "/some/path"
    assert post["status"] == "200 OK"
    hooks = [e["hook"] for e in read_hooks(log)]
    assert hooks.index("pre_request") < hooks.index("post_request")


def test_ttin_ttou_nworkers_changed_and_exit_hooks(hooked):
    srv, log = hooked("-w", "2")
    master = srv.proc.pid
    before = wait_workers(master, 2)
    wait_hook(log, "post_worker_init", 2)
    srv.send_signal(signal.SIGTTIN)
    wait_hook(log, "nworkers_changed", 2)
    three = wait_workers(master, 3)
    srv.send_signal(signal.SIGTTOU)
    wait_hook(log, "nworkers_changed", 3)
    after = wait_workers(master, 2)
    nw = named(read_hooks(log), "nworkers_changed")
    assert [(e["new"], e["old"]) for e in nw[:3]] == [(2, None), (3, 2), (2, 3)], nw
    (gone,) = set(three) - set(after)
    assert gone in before, "TTOU should retire the oldest worker"
    (wexit,) = wait_hook(log, "worker_exit")
    assert wexit["pid"] == gone
    (cexit,) = wait_hook(log, "child_exit")
    assert cexit["pid"] == master and cexit["worker_pid"] == gone


def test_term_while_the_app_loads_stops_the_worker_gracefully_once_up(server, tmp_path, state_dir):
    # A TERM that reaches a worker still importing its app is kept until the worker's own
    # handlers run: the worker boots, then stops gracefully (worker_exit fires) instead of
    # dying by the signal's default action.
    log = tmp_path / "hooks.jsonl"
    srv = server("boot_slow:app", "-c", CONF, "-w", "1",
                 env={"HOOK_LOG": str(log), "STATE_DIR": str(state_dir)}, cwd=MASTER_DIR)
    text = wait_for_file(state_dir / "boot-slow-started", timeout=10)
    assert text is not None
    loading = int(text)
    os.kill(loading, signal.SIGTERM)
    wait_until(lambda: loading in {e["pid"] for e in named(read_hooks(log), "worker_exit")}, 15,
               "worker_exit of the worker signalled while loading")
    assert f"Worker (pid:{loading}) was sent SIGTERM" not in srv.stderr_text()
    assert srv.returncode is None


def test_term_fires_worker_exit_child_exit_on_exit(hooked):
    srv, log = hooked("-w", "2")
    master = srv.proc.pid
    wait_hook(log, "post_worker_init", 2)
    workers = {e["pid"] for e in named(read_hooks(log), "post_fork")}
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15) == 0, srv.stderr_text()
    ev = read_hooks(log)
    assert {e["pid"] for e in named(ev, "worker_exit")} == workers
    ce = named(ev, "child_exit")
    assert {e["worker_pid"] for e in ce} == workers and all(e["pid"] == master for e in ce)
    (ex,) = named(ev, "on_exit")
    assert ex["pid"] == master
    assert ev[-1]["hook"] == "on_exit", [e["hook"] for e in ev]
    assert not named(ev, "worker_int")


def test_hup_fires_on_reload_in_master(hooked):
    srv, log = hooked("-w", "1")
    master = srv.proc.pid
    (old,) = wait_workers(master, 1)
    wait_hook(log, "post_worker_init", 1)
    srv.send_signal(signal.SIGHUP)
    (rel,) = wait_hook(log, "on_reload")
    assert rel["pid"] == master
    wait_hook(log, "post_worker_init", 2)
    wait_until(lambda: get_pid(srv.url) != old, 15, "new worker serves")
    ev = read_hooks(log)
    hooks = [e["hook"] for e in ev]
    assert hooks.index("on_reload") < len(hooks) - 1 - hooks[::-1].index("post_fork")
    srv.wait_log(r"Handling signal: hup")


def test_int_fires_worker_int_in_worker(hooked):
    srv, log = hooked("-w", "1")
    (worker,) = wait_workers(srv.proc.pid, 1)
    wait_hook(log, "post_worker_init")
    srv.send_signal(signal.SIGINT)
    srv.wait_exit(15)
    wi = named(read_hooks(log), "worker_int")
    assert [e["pid"] for e in wi] == [worker], read_hooks(log)


def test_timeout_fires_worker_abort_in_worker(hooked, tmp_path):
    state = tmp_path / "st"
    state.mkdir()
    srv, log = hooked("-w", "1", "-t", "2", env={"STATE_DIR": str(state)})
    (worker,) = wait_workers(srv.proc.pid, 1)
    with Conn(srv.port, timeout=30) as c:
        c.send(request_bytes("GET", "/hang"))
        (ab,) = wait_hook(log, "worker_abort", timeout=20)
    assert ab["pid"] == worker
    srv.wait_log(rf"WORKER TIMEOUT \(pid:{worker}\)", timeout=5)


def test_usr2_fires_pre_exec(hooked, tmp_path, reaper):  # noqa: F811
    pidfile = tmp_path / "m.pid"
    srv, log = hooked("-w", "1", "--pid", str(pidfile))
    master = srv.proc.pid
    wait_hook(log, "post_worker_init")
    srv.send_signal(signal.SIGUSR2)
    pid2 = tmp_path / "m.pid.2"
    wait_until(lambda: pid2.exists() and pid2.read_text().strip(), 20, "m.pid.2")
    new_master = int(pid2.read_text().strip())
    reaper.append(new_master)
    (pe,) = wait_hook(log, "pre_exec")
    assert pe["pid"] != master  # forked child of the master, just before exec
    assert pe["pid"] == new_master  # exec keeps the pid
    # the new master runs its own on_starting/when_ready
    wait_until(lambda: any(e["pid"] == new_master for e in named(read_hooks(log), "when_ready")), 20, "new when_ready")


def test_kill9_fires_child_exit_only(hooked):
    srv, log = hooked("-w", "1")
    master = srv.proc.pid
    (victim,) = wait_workers(master, 1)
    wait_hook(log, "post_worker_init")
    import os

    os.kill(victim, signal.SIGKILL)
    (ce,) = wait_hook(log, "child_exit")
    assert ce["pid"] == master and ce["worker_pid"] == victim
    wait_hook(log, "post_worker_init", 2)
    assert not [e for e in named(read_hooks(log), "worker_exit") if e["pid"] == victim]


def test_max_requests_retirement_fires_worker_exit(hooked):
    srv, log = hooked("-w", "1", "--max-requests", "2")
    master = srv.proc.pid
    (first,) = wait_workers(master, 1)
    wait_hook(log, "post_worker_init")
    time.sleep(1.2)  # let the master see the worker booted (see SERVER_BUGS.md, fast recycling)
    assert get_pid(srv.url) == first
    assert get_pid(srv.url) == first
    (we,) = wait_hook(log, "worker_exit")
    assert we["pid"] == first
    (ce,) = wait_hook(log, "child_exit")
    assert ce["pid"] == master and ce["worker_pid"] == first
