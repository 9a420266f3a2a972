"""Process-level features: pidfile, daemon, user/group, umask, process titles, systemd."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from apps.master.helpers import (
    APP,
    MASTER_DIR,
    comm,
    cmdline,
    get_pid,
    pid_alive,
    proc_status,
    reaper,  # noqa: F401  (fixture)
    wait_until,
    wait_workers,
)
from conftest import ServerError, ferrocorn_cmd

try:
    import setproctitle  # noqa: F401

    HAVE_SETPROCTITLE = True
except ImportError:
    HAVE_SETPROCTITLE = False


# --- pidfile --------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pidfile_written_and_removed(server, tmp_path, sig):
    pidfile = tmp_path / "run" / "app.pid"
    pidfile.parent.mkdir()
    srv = server(APP, "--pid", str(pidfile), cwd=MASTER_DIR)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pidfile")
    # signal only once fully up (signals before the handlers exist kill the master, like Gunicorn)
    get_pid(srv.url)
    assert int(pidfile.read_text().strip()) == srv.proc.pid
    srv.send_signal(sig)
    srv.wait_exit(15)
    assert not pidfile.exists()


def test_pidfile_of_running_process_is_refused(server, tmp_path):
    """Gunicorn: "Already running on PID N (or pid file '...' is stale)", exit 1."""
    pidfile = tmp_path / "busy.pid"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile.write_text(f"{holder.pid}\n")
        try:
            srv = server(APP, "--pid", str(pidfile), cwd=MASTER_DIR)
        except ServerError:
            srv = server.servers[-1]
        else:
            raise AssertionError(f"server started despite a live pid in the pidfile:\n{srv.stderr_text()}")
        assert srv.returncode not in (None, 0), srv.stderr_text()
        assert str(holder.pid) in srv.stderr_text(), srv.stderr_text()
        assert pidfile.read_text().strip() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()


def test_stale_pidfile_is_replaced(server, tmp_path):
    pidfile = tmp_path / "stale.pid"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    srv = server(APP, "--pid", str(pidfile), cwd=MASTER_DIR)
    wait_until(lambda: pidfile.read_text().strip() == str(srv.proc.pid), 10, "pidfile rewritten")


# --- daemon ----------------------------------------------------------------------------------
def test_daemon_detaches_and_serves(tmp_path, reaper):  # noqa: F811
    pidfile = tmp_path / "d.pid"
    log = tmp_path / "err.log"
    t0 = time.monotonic()
    r = subprocess.run(
        ferrocorn_cmd() + ["-D", "--pid", str(pidfile), "--error-logfile", str(log), "-b", "127.0.0.1:0", APP],
        cwd=str(MASTER_DIR),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20,
    )
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 15
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 15, "daemon pidfile")
    daemon = int(pidfile.read_text().strip())
    reaper.append(daemon)
    assert pid_alive(daemon)
    m = wait_until(lambda: re.search(r"Listening at: http://127\.0\.0\.1:(\d+) \((\d+)\)", log.read_text() if log.exists() else ""), 15, "daemon listening")
    assert int(m.group(2)) == daemon
    url = f"http://127.0.0.1:{m.group(1)}"
    assert get_pid(url) in wait_workers(daemon, 1)
    # detached: new session, not a child of the test process
    st = proc_status(daemon)
    assert int(st["PPid"]) != os.getpid()
    assert os.getsid(daemon) != os.getsid(0)
    os.kill(daemon, signal.SIGTERM)
    wait_until(lambda: not pid_alive(daemon), 15, "daemon exit")
    assert not pidfile.exists()


# --- user / group / umask -----------------------------------------------------------------------
def _workers_run_as_nobody(srv, n):
    master = srv.proc.pid
    try:
        workers = wait_workers(master, n)
        ids = requests.get(srv.url + "/ids", timeout=10).text
    except (AssertionError, requests.RequestException) as e:
        raise AssertionError(f"{e!r}; master rc={srv.returncode}; log:\n{srv.stderr_text()[-1500:]}") from None
    assert ids == "65534 65534"
    for w in workers:
        st = proc_status(w)
        assert st["Uid"].split() == ["65534"] * 4, st["Uid"]
        assert st["Gid"].split() == ["65534"] * 4, st["Gid"]
    mst = proc_status(master)
    assert mst["Uid"].split()[0] == "0" and mst["Gid"].split()[0] == "0"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_user_group_apply_to_workers_only_preload(server):
    # --preload: the app is imported by root in the master; workers only drop privileges
    srv = server(APP, "-u", "nobody", "-g", "nogroup", "-w", "2", "--preload", cwd=MASTER_DIR)
    _workers_run_as_nobody(srv, 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_numeric_user_group_preload(server):
    srv = server(APP, "-u", "65534", "-g", "65534", "--preload", cwd=MASTER_DIR)
    _workers_run_as_nobody(srv, 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_user_group_without_preload(server):
    """Without --preload the worker imports the app after dropping privileges.

    The app module (tests/apps/master/mapp.py) and its imports are readable by `nobody`,
    but in this environment the Python stdlib lives under /root (mode 0700). Gunicorn
    imports its own machinery (e.g. `ast` for app-spec parsing) in the master before
    fork, so only the app's imports need to be readable by the worker user.
    """
    srv = server(APP, "-u", "nobody", "-g", "nogroup", "-w", "2", cwd=MASTER_DIR)
    _workers_run_as_nobody(srv, 2)


def test_umask(server):
    srv = server(APP, "-m", "0o077", cwd=MASTER_DIR)
    assert proc_status(srv.proc.pid)["Umask"] == "0077"
    assert requests.get(srv.url + "/umask", timeout=10).text == "0o77"


def test_umask_leading_zero_octal(server):
    srv = server(APP, "--umask", "027", cwd=MASTER_DIR)
    assert proc_status(srv.proc.pid)["Umask"] == "0027"


# --- process titles -------------------------------------------------------------------------------
@pytest.mark.parametrize("name_args, name", [((), "mapp:app"), (("-n", "shop-api"), "shop-api"), (("--name", "x y"), "x y")])
def test_process_titles(server, name_args, name):
    srv = server(APP, "-w", "2", *name_args, cwd=MASTER_DIR)
    master = srv.proc.pid
    workers = wait_workers(master, 2)
    get_pid(srv.url)
    assert comm(master) == "ferrocorn: mast", comm(master)
    for w in workers:
        assert comm(w) == "ferrocorn: work", comm(w)
    if HAVE_SETPROCTITLE:
        assert cmdline(master).startswith(f"ferrocorn: master [{name}]"), cmdline(master)
        for w in workers:
            assert cmdline(w).startswith(f"ferrocorn: worker [{name}]"), cmdline(w)


# --- systemd ------------------------------------------------------------------------------------
def test_systemd_socket_activation(server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # the wrapper re-binds it; loopback, tiny race acceptable
    wrapper = (
        "import os, socket, sys\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen(64)\n"
        "if s.fileno() != 3:\n"
        "    os.dup2(s.fileno(), 3)\n"
        "os.set_inheritable(3, True)\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execvp(sys.executable, [sys.executable] + sys.argv[1:])\n"
    )
    cmd = [sys.executable, "-c", wrapper] + ferrocorn_cmd()[1:]
    srv = server(APP, "-w", "1", cmd=cmd, cwd=MASTER_DIR, bind=False)
    assert srv.port == port, srv.stderr_text()
    assert get_pid(f"http://127.0.0.1:{port}") in wait_workers(srv.proc.pid, 1)
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15) == 0


def test_sd_notify_ready_and_stopping(server, tmp_path):
    path = str(tmp_path / "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.settimeout(0.2)
    msgs = []

    def drain():
        try:
            while True:
                msgs.append(ns.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            pass
        return msgs

    try:
        srv = server(APP, env={"NOTIFY_SOCKET": path}, cwd=MASTER_DIR)
        wait_until(lambda: any("READY=1" in m for m in drain()), 15, "READY=1")
        get_pid(srv.url)
        srv.send_signal(signal.SIGTERM)
        wait_until(lambda: any("STOPPING=1" in m for m in drain()), 15, "STOPPING=1")
        assert srv.wait_exit(15) == 0
    finally:
        ns.close()
