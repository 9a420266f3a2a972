"""Command line: entry points, APP forms, binds, logging, signals, option errors."""

import json
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

from conftest import APPS_DIR, ferrocorn_cmd, wait_for_file
from wire import Conn, request_bytes

LOG_LINE = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] "


def run_cli(*args, timeout=15, cwd=APPS_DIR):
    return subprocess.run(
        ferrocorn_cmd() + list(args),
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def get(srv, path="/", **kw):
    return requests.get(srv.url + path, timeout=5, **kw)


def test_version_flag():
    r = run_cli("--version")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "ferrocorn" in out.lower()
    assert re.search(r"\d+\.\d+", out)


def test_console_script_serves(server):
    exe = shutil.which("ferrocorn")
    assert exe, "the `ferrocorn` console command is not on PATH"
    srv = server("default_app", cmd=[exe])
    assert get(srv).text == "default application"


def test_startup_log_lines(server):
    srv = server("echo:app")
    err = srv.stderr_text()
    pid = srv.proc.pid
    m = re.search(LOG_LINE.replace(r"\[[A-Z]+\]", r"\[INFO\]") + r"Listening at: http://127\.0\.0\.1:(\d+) \((\d+)\)", err)
    assert m, err
    assert int(m.group(1)) == srv.port and srv.port > 0
    assert int(m.group(2)) == pid
    m = srv.wait_log(r"Booting worker with pid: (\d+)")
    assert int(m.group(1)) > 0
    assert "gunicorn" not in err.lower().replace("gunicorn-compatible", "")


@pytest.mark.parametrize(
    "app, expected",
    [
        ("default_app", "default application"),
        ("default_app:application", "default application"),
        ("factory:create()", {"factory": "create", "args": []}),
        ("factory:create_with('arg', 2)", {"factory": "create_with", "args": ["arg", 2], "kwargs": {}}),
    ],
)
def test_app_spec_forms(server, app, expected):
    srv = server(app)
    r = get(srv)
    assert r.status_code == 200
    if isinstance(expected, dict):
        assert r.json() == expected
    else:
        assert r.text == expected


def test_cwd_is_on_sys_path(server):
    srv = server("remote_app:app", cwd=APPS_DIR / "elsewhere")
    assert get(srv).text == "remote app"


def test_pythonpath(server, tmp_path):
    srv = server("remote_app:app", "--pythonpath", f"{tmp_path / 'nope'},{APPS_DIR / 'elsewhere'}", cwd=tmp_path)
    assert get(srv).text == "remote app"


def test_chdir(server, tmp_path):
    srv = server("envapp:app", "--chdir", str(APPS_DIR), cwd=tmp_path)
    assert get(srv).json()["cwd"] == str(APPS_DIR)


def test_env_option(server):
    srv = server("envapp:app", "-e", "FERRO_A=one", "--env", "FERRO_B=two=three")
    r = get(srv, "/?FERRO_A,FERRO_B")
    assert r.json()["env"] == {"FERRO_A": "one", "FERRO_B": "two=three"}


def test_multiple_binds(server):
    srv = server("default_app", "-b", "127.0.0.1:0", "-b", "127.0.0.1:0", listen_count=2)
    ports = srv.ports()
    assert len(set(ports)) == 2, srv.stderr_text()
    for p in ports:
        assert requests.get(f"http://127.0.0.1:{p}/", timeout=5).text == "default application"


def _ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback")
def test_bind_ipv6(server):
    srv = server("echo:app", "-b", "[::1]:0")
    assert srv.listen_url.startswith("http://[::1]:"), srv.listen_url
    with Conn(srv.port, host="::1") as c:
        c.send(request_bytes("GET", "/v6"))
        r = c.read_response()
    assert r.status == 200
    env = r.json()
    assert env["REMOTE_ADDR"] == "::1"
    assert env["SERVER_PORT"] == str(srv.port)


def test_bind_unix_socket(server, tmp_path):
    path = tmp_path / "ferro.sock"
    srv = server("echo:app", "-b", f"unix:{path}")
    assert srv.listen_url == f"unix:{path}", srv.stderr_text()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"GET /unix?x=1 HTTP/1.1\r\nHost: example.org:8080\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    env = json.loads(body)
    assert env["PATH_INFO"] == "/unix" and env["QUERY_STRING"] == "x=1"


def test_bind_inherited_fd(server):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    try:
        fd = lsock.fileno()
        srv = server("default_app", "-b", f"fd://{fd}", pass_fds=[fd])
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "default application"
        assert str(port) in srv.stderr_text()
    finally:
        lsock.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--backlog", "64"],
        ["--reuse-port"],
        ["--keep-alive", "5"],
        ["--log-level", "debug"],
        ["--limit-request-line", "8000", "--limit-request-fields", "50", "--limit-request-field_size", "4000"],
        ["--header-timeout", "3"],
    ],
    ids=lambda a: a[0],
)
def test_accepted_options(server, args):
    srv = server("default_app", *args)
    assert get(srv).text == "default application"


def test_access_log_file_default_format(server, tmp_path):
    log = tmp_path / "access.log"
    srv = server("default_app", "--access-logfile", str(log))
    get(srv, "/hello?x=1", headers={"User-Agent": "ferro-test-agent", "Referer": "http://ref.example/"})
    text = wait_for_file(log, predicate=lambda t: "/hello" in t and t.endswith("\n"))
    assert text, f"no access log line; stderr:\n{srv.stderr_text()}"
    # Gunicorn default: %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
    assert re.search(
        r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /hello\?x=1 HTTP/1\.1" 200 19 "http://ref\.example/" "ferro-test-agent"$',
        text,
        re.M,
    ), text


def test_access_log_custom_format_to_stdout(server):
    srv = server("default_app", "--access-logfile", "-", "--access-logformat", "%(m)s|%(U)s|%(q)s|%(s)s|%(H)s")
    get(srv, "/fmt?a=b")
    deadline = time.monotonic() + 5
    while "GET|/fmt|a=b|200|HTTP/1.1" not in srv.stdout_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "GET|/fmt|a=b|200|HTTP/1.1" in srv.stdout_text(), srv.stdout_text() + srv.stderr_text()


def test_error_logfile(server, tmp_path):
    log = tmp_path / "error.log"
    srv = server("default_app", "--error-logfile", str(log), log_path=log)
    assert get(srv).status_code == 200
    assert "Listening at: http://127.0.0.1:" in log.read_text()


def test_sigterm_graceful_finishes_inflight_request(server, state_dir):
    srv = server("features:app", env={"STATE_DIR": str(state_dir)})
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("GET", "/slow?delay=1.5"))
        assert wait_for_file(state_dir / "slow-started"), "slow request never started"
        srv.send_signal(signal.SIGTERM)
        r = c.read_response(timeout=10)
    assert r.status == 200 and r.body == b"slow done"
    assert srv.wait_exit(10) == 0, srv.stderr_text()


def test_sigterm_idle_exits_zero(server):
    srv = server("default_app")
    assert get(srv).status_code == 200
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(10) == 0, srv.stderr_text()


def test_sigint_quick_stop(server, state_dir):
    srv = server("features:app", env={"STATE_DIR": str(state_dir)})
    c = Conn(srv.port, timeout=10)
    try:
        c.send(request_bytes("GET", "/slow?delay=30"))
        assert wait_for_file(state_dir / "slow-started")
        srv.send_signal(signal.SIGINT)
        srv.wait_exit(8)  # quick: does not wait for the 30 s request
    finally:
        c.close()
    assert not (state_dir / "slow-finished").exists()


@pytest.mark.parametrize(
    "args, setting",
    [
        (["--reload"], "reload"),
        (["--spew"], "spew"),
        (["--paste", "x.ini"], "paste"),
        (["--certfile", "x.pem"], "certfile"),
    ],
)
def test_unimplemented_gunicorn_flag_is_refused(args, setting):
    r = run_cli(*args, "-b", "127.0.0.1:0", "default_app")
    assert r.returncode != 0, r.stderr
    assert re.search(setting, r.stderr, re.I), r.stderr


def test_unknown_flag_is_refused():
    r = run_cli("--definitely-not-a-flag", "default_app")
    assert r.returncode != 0
    assert "--definitely-not-a-flag" in r.stderr, r.stderr


def test_missing_app_argument_is_refused():
    r = run_cli("-b", "127.0.0.1:0")
    assert r.returncode != 0
    assert r.stderr.strip()
