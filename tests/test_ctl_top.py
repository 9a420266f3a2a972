"""The control socket and its clients: ``ferrocorn ctl`` and ``ferrocorn top``."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import stat
import struct
import subprocess
import termios
import time

from apps.obs.obshelpers import APP, OBS_DIR, ctl, ferrocorn_cli, get, pid_alive, start, wait_until, wait_workers
from conftest import wait_for_file

WORKER_KEYS = {
    "pid", "state", "age", "uptime_seconds", "requests", "in_flight", "open_connections",
    "rss_bytes", "cpu_seconds", "p50_ms", "p99_ms",
}
STATUS_KEYS = {"ok", "pid", "version", "uptime_seconds", "workers_target", "workers", "totals", "restarts"}
TOTALS_KEYS = {"requests", "in_flight", "exceptions", "p50_ms", "p99_ms"}
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>78]")


def status(sock):
    return ctl(sock, "status", json_out=True).data


def live_pids(st):
    return sorted(w["pid"] for w in st["workers"])


# -- ctl -------------------------------------------------------------------------------
def test_ctl_status_json_keys_and_worker_pids(server, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start(server, workers=2, ctl=sock, metrics=False)
    pids = wait_workers(srv, 2)
    for _ in range(5):
        get(srv.port, "/")
    st = wait_until(lambda: (lambda s: s if s["totals"]["requests"] == 5 else None)(status(sock)), 10, "5 requests")
    assert set(st) >= STATUS_KEYS, sorted(st)
    assert st["ok"] is True
    assert st["pid"] == srv.proc.pid
    assert st["workers_target"] == 2
    assert live_pids(st) == pids
    for w in st["workers"]:
        assert set(w) >= WORKER_KEYS, sorted(w)
        assert w["state"] in ("booting", "idle", "busy", "retiring")
        assert w["rss_bytes"] > 1_000_000
    assert sum(w["requests"] for w in st["workers"]) == 5
    assert set(st["totals"]) >= TOTALS_KEYS, st["totals"]
    assert set(st["restarts"]) == {"max_requests", "timeout", "memory", "crash", "reload", "scale"}
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", st["version"])
    # the human rendering shows the same pids, and `workers --json` lists them too
    human = ctl(sock, "status").stdout
    for p in pids:
        assert str(p) in human, human
    assert sorted(w["pid"] for w in ctl(sock, "workers", json_out=True).data["workers"]) == pids


def test_ctl_workers_add_and_remove(server, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start(server, workers=2, ctl=sock, metrics=False)
    before = wait_workers(srv, 2)
    p = ctl(sock, "workers", "add", "1", json_out=True)
    assert p.data["ok"] is True
    wait_until(lambda: status(sock)["workers_target"] == 3, 10, "target 3")
    after = wait_workers(srv, 3)
    new = set(after) - set(before)
    assert len(new) == 1
    srv.wait_log(rf"Booting worker with pid: {new.pop()}")
    wait_until(lambda: len(status(sock)["workers"]) == 3, 10, "3 workers in status")
    ctl(sock, "workers", "remove", "1")
    wait_until(lambda: status(sock)["workers_target"] == 2, 10, "target 2")
    wait_workers(srv, 2)
    # a bad count is refused client-side (usage error)
    bad = ctl(sock, "workers", "add", "0", check=False)
    assert bad.returncode == 2, bad


def test_ctl_reload_replaces_workers(server, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start(server, workers=2, ctl=sock, metrics=False)
    old = wait_workers(srv, 2)
    ctl(sock, "reload")
    wait_until(lambda: not any(pid_alive(p) for p in old), 15, "old workers gone")
    new = wait_workers(srv, 2)
    assert not set(new) & set(old), (old, new)
    assert srv.proc.poll() is None
    st = wait_until(lambda: (lambda s: s if live_pids(s) == new else None)(status(sock)), 10, "status shows new pids")
    assert st["pid"] == srv.proc.pid
    assert get(srv.port, "/")[0] == 200


def test_ctl_reopen_logs(server, tmp_path):
    sock = tmp_path / "c.ctl"
    errlog = tmp_path / "error.log"
    srv = start(server, "--error-logfile", errlog, workers=1, ctl=sock, metrics=False, log_path=errlog)
    wait_workers(srv, 1)
    assert "Booting worker" in errlog.read_text()
    rotated = tmp_path / "error.log.1"
    os.rename(errlog, rotated)
    ctl(sock, "reopen-logs")
    # the next log line (a new worker booting) lands in a fresh file at the original path
    ctl(sock, "workers", "add", "1")
    text = wait_for_file(errlog, 10, lambda t: "Booting worker" in t)
    assert text and "Booting worker" in text, f"no new error log at {errlog}; rotated:\n{rotated.read_text()[-2000:]}"
    assert "Booting worker" in rotated.read_text()


def test_ctl_shutdown_graceful(server, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start(server, workers=2, ctl=sock, metrics=False)
    pids = wait_workers(srv, 2)
    p = ctl(sock, "shutdown", "--graceful")
    assert "graceful" in p.stdout
    assert srv.wait_exit(20) == 0, srv.stderr_text()[-3000:]
    assert not any(pid_alive(w) for w in pids)
    assert not sock.exists(), "control socket left behind after shutdown"
    gone = ctl(sock, "status", check=False)
    assert gone.returncode == 1 and "cannot connect" in gone.stderr


def test_ctl_shutdown_immediate(server, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start(server, workers=1, ctl=sock, metrics=False)
    wait_workers(srv, 1)
    ctl(sock, "shutdown")
    assert srv.wait_exit(20) == 0, srv.stderr_text()[-3000:]


def test_control_socket_mode(server, tmp_path):
    sock = tmp_path / "c.ctl"
    start(server, workers=1, ctl=sock, metrics=False)
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    sock2 = tmp_path / "d.ctl"
    start(server, "--control-socket-mode", "0o660", workers=1, ctl=sock2, metrics=False)
    assert stat.S_IMODE(os.stat(sock2).st_mode) == 0o660, oct(os.stat(sock2).st_mode)


def test_default_socket_under_xdg_runtime_dir_and_no_control_socket(server, tmp_path):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(xdg), "FERROCORN_CONTROL_SOCKET": ""}
    srv = server(APP, "-w", "1", env=env, cwd=OBS_DIR)
    wait_workers(srv, 1)
    default = xdg / "gunicorn.ctl"
    wait_until(default.exists, 5, "default control socket")
    assert stat.S_IMODE(os.stat(default).st_mode) == 0o600
    srv.stop()
    assert not default.exists(), "socket file not removed at exit"

    xdg2 = tmp_path / "xdg2"
    xdg2.mkdir(mode=0o700)
    srv = server(APP, "-w", "1", "--no-control-socket", env={"XDG_RUNTIME_DIR": str(xdg2)}, cwd=OBS_DIR)
    wait_workers(srv, 1)
    time.sleep(0.5)
    assert list(xdg2.iterdir()) == [], list(xdg2.iterdir())
    assert get(srv.port, "/")[0] == 200


# -- top -------------------------------------------------------------------------------
def test_top_plain_frames_when_not_a_tty(server, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start(server, workers=2, ctl=sock, metrics=False)
    pids = wait_workers(srv, 2)
    wait_until(lambda: len(status(sock)["workers"]) == 2, 10, "2 workers in status")
    p = subprocess.run(
        ferrocorn_cli() + ["top", "--socket", str(sock), "--interval", "0.3", "--iterations", "2"],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout, "escape codes in plain mode"
    # a frame starts with its "ferrocorn VERSION  pid N" line (frames are also separated by a blank line)
    frames = [f for f in re.split(r"\n(?=ferrocorn \S+  pid )", p.stdout) if f.strip()]
    assert len(frames) == 2, p.stdout
    for f in frames:
        assert "rps" in f and "PID" in f and "STATE" in f and "REQUESTS" in f, f
        for w in pids:
            assert re.search(rf"^\s*{w}\s", f, re.M), (w, f)


def test_top_fails_cleanly_without_server(tmp_path):
    p = subprocess.run(
        ferrocorn_cli() + ["top", "--socket", str(tmp_path / "nothing.ctl"), "--iterations", "1"],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 1 and "cannot connect" in p.stderr, p


def _read_pty(fd, seconds, buf):
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        r, _, _ = select.select([fd], [], [], remaining)
        if not r:
            return
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO once the child side is closed
            return
        if not data:
            return
        buf.extend(data)


def test_top_interactive_on_a_pty(server, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start(server, workers=2, ctl=sock, metrics=False)
    pids = wait_workers(srv, 2)
    wait_until(lambda: len(status(sock)["workers"]) == 2, 10, "2 workers in status")
    master_fd, slave_fd = os.openpty()
    fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))

    def make_controlling_tty():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = dict(os.environ, TERM="xterm")
    proc = subprocess.Popen(
        ferrocorn_cli() + ["top", "--socket", str(sock), "--interval", "0.3"],
        stdin=slave_fd, stdout=slave_fd, stderr=slave_fd, env=env,
        start_new_session=True, preexec_fn=make_controlling_tty, close_fds=True,
    )
    os.close(slave_fd)
    buf = bytearray()
    try:
        for _ in range(3):
            get(srv.port, "/")
        _read_pty(master_fd, 2.0, buf)
        screen = ANSI_RE.sub(" ", buf.decode("utf-8", "replace"))
        assert proc.poll() is None, f"top exited early ({proc.returncode}): {screen[-2000:]}"
        assert "\x1b[?1049h" in buf.decode("latin-1"), "no alternate screen"
        assert "rps" in screen and "PID" in screen and "STATE" in screen and "REQUESTS" in screen, screen[-3000:]
        for w in pids:
            assert str(w) in screen, (w, screen[-3000:])
        assert "press q to quit" in screen
        os.write(master_fd, b"q")
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            _read_pty(master_fd, 0.2, buf)
        assert proc.poll() == 0, f"top did not exit 0 within 5 s after q (rc={proc.poll()})"
        _read_pty(master_fd, 0.3, buf)
        assert "\x1b[?1049l" in buf.decode("latin-1"), "alternate screen not left on exit"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        os.close(master_fd)
