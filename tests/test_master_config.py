"""Config files, precedence (defaults/env < file < *_CMD_ARGS < CLI), --print-config, --check-config."""

import os
import re
import signal
import subprocess
import time

import pytest
import requests

from apps.master.helpers import APP, MASTER_DIR, get_pid, wait_workers
from conftest import ferrocorn_cmd

PRINT_RE = re.compile(r"^(\w+)\s*=\s?(.*)$", re.M)
CLEAN_ENV_KEYS = ("WEB_CONCURRENCY", "PORT", "GUNICORN_CMD_ARGS", "FERROCORN_CMD_ARGS")


def run(*args, env=None, cwd=MASTER_DIR, timeout=30):
    e = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_KEYS}
    e.update(env or {})
    return subprocess.run(
        ferrocorn_cmd() + [str(a) for a in args],
        cwd=str(cwd),
        env=e,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def print_config(*args, **kw):
    r = run("--print-config", *args, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(PRINT_RE.findall(r.stdout))


@pytest.fixture
def conf(tmp_path):
    def write(text, name="conf.py"):
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


def test_print_config_defaults():
    cfg = print_config(APP)
    assert cfg["workers"] == "1"
    assert cfg["timeout"] == "30"
    assert cfg["max_requests"] == "0"
    assert cfg["preload_app"] == "False"
    assert cfg["bind"] == "['127.0.0.1:8000']"


def test_precedence_env_file_cmdargs_cli(conf):
    c = conf("workers = 2\nmax_requests = 10\ntimeout = 11\nkeepalive = 7\n")
    env = {"WEB_CONCURRENCY": "5"}
    # env-derived default only
    assert print_config(APP, env=env)["workers"] == "5"
    # config file beats env-derived defaults
    cfg = print_config("-c", c, APP, env=env)
    assert (cfg["workers"], cfg["max_requests"], cfg["timeout"], cfg["keepalive"]) == ("2", "10", "11", "7")
    # GUNICORN_CMD_ARGS beats the config file
    env2 = dict(env, GUNICORN_CMD_ARGS="--workers 3 --timeout 12")
    cfg = print_config("-c", c, APP, env=env2)
    assert (cfg["workers"], cfg["max_requests"], cfg["timeout"]) == ("3", "10", "12")
    # the command line beats GUNICORN_CMD_ARGS
    cfg = print_config("-c", c, "-w", "4", APP, env=env2)
    assert (cfg["workers"], cfg["timeout"], cfg["keepalive"]) == ("4", "12", "7")


def test_ferrocorn_cmd_args(conf):
    c = conf("workers = 2\n")
    cfg = print_config("-c", c, APP, env={"FERROCORN_CMD_ARGS": "--workers 6 --max-requests 9"})
    assert cfg["workers"] == "6" and cfg["max_requests"] == "9"
    cfg = print_config("-c", c, "-w", "7", APP, env={"FERROCORN_CMD_ARGS": "--workers 6"})
    assert cfg["workers"] == "7"


def test_config_option_inside_cmd_args(conf):
    c = conf("workers = 8\n")
    assert print_config(APP, env={"GUNICORN_CMD_ARGS": f"-c {c}"})["workers"] == "8"


def test_port_env_sets_default_bind(conf):
    assert print_config(APP, env={"PORT": "5123"})["bind"] == "['0.0.0.0:5123']"
    c = conf("bind = ['127.0.0.1:6000']\n")
    assert print_config("-c", c, APP, env={"PORT": "5123"})["bind"] == "['127.0.0.1:6000']"
    assert print_config("-c", c, "-b", "127.0.0.1:7000", APP, env={"PORT": "5123"})["bind"] == "['127.0.0.1:7000']"


def test_gunicorn_conf_py_in_cwd_is_read(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\nproc_name = 'from-cwd'\n")
    cfg = print_config("--pythonpath", MASTER_DIR, APP, cwd=tmp_path)
    assert cfg["workers"] == "4" and cfg["proc_name"] == "from-cwd"
    # an explicit -c wins over ./gunicorn.conf.py
    (tmp_path / "other.py").write_text("workers = 2\n")
    assert print_config("-c", tmp_path / "other.py", "--pythonpath", MASTER_DIR, APP, cwd=tmp_path)["workers"] == "2"


def test_file_prefix_and_python_module_config(conf):
    c = conf("workers = 5\n")
    assert print_config("-c", f"file:{c}", APP)["workers"] == "5"
    cfg = print_config("-c", "python:confpkg.settings", APP)
    assert cfg["workers"] == "3" and cfg["max_requests"] == "77"


def test_unknown_names_and_helpers_are_ignored(conf):
    c = conf("import os\nHELPER = 1\n_private = 2\nsome_helper_value = 'x'\nworkers = 2\n")
    assert print_config("-c", c, APP)["workers"] == "2"


def test_wsgi_app_from_config_file(server, conf):
    c = conf("wsgi_app = 'mapp:app'\nworkers = 2\nbind = '127.0.0.1:0'\n")
    srv = server(None, "-c", str(c), cwd=MASTER_DIR, bind=False)
    wait_workers(srv.proc.pid, 2)
    assert get_pid(srv.url) > 0


def test_config_file_starts_server(server, conf):
    c = conf("workers = 2\nbind = '127.0.0.1:0'\nmax_requests = 10\n")
    srv = server(APP, "-c", str(c), cwd=MASTER_DIR, bind=False)
    assert srv.host == "127.0.0.1"
    wait_workers(srv.proc.pid, 2)
    pids = {get_pid(srv.url) for _ in range(40)}
    # max_requests = 10 with 2 workers: 40 requests need at least 4 distinct workers
    assert len(pids) >= 4, pids


def test_bad_hook_arity_is_refused(conf):
    c = conf("def post_fork(server):\n    pass\n")
    r = run("-c", c, "-b", "127.0.0.1:0", APP)
    assert r.returncode != 0
    assert "post_fork" in r.stderr, r.stderr
    r = run("--check-config", "-c", c, APP)
    assert r.returncode != 0 and "post_fork" in r.stderr, r.stderr


def test_post_request_arity_two_three_four_accepted(conf):
    for params in ("worker, req", "worker, req, environ", "worker, req, environ, resp"):
        c = conf(f"def post_request({params}):\n    pass\n")
        r = run("--check-config", "-c", c, APP)
        assert r.returncode == 0, (params, r.stderr)


def test_invalid_setting_value_is_refused(conf):
    c = conf("workers = 'lots'\n")
    r = run("--check-config", "-c", c, APP)
    assert r.returncode != 0
    assert "workers" in r.stderr, r.stderr


def test_exception_in_config_file_is_refused(conf):
    c = conf("raise RuntimeError('config boom')\n")
    r = run("--check-config", "-c", c, APP)
    assert r.returncode != 0
    assert "config boom" in r.stderr, r.stderr


def test_missing_config_file_is_refused(tmp_path):
    r = run("--check-config", "-c", tmp_path / "nope.py", APP)
    assert r.returncode != 0
    assert "nope.py" in r.stderr, r.stderr


def test_check_config_ok_and_bad_app():
    r = run("--check-config", APP)
    assert r.returncode == 0, r.stderr
    r = run("--check-config", "no_such_module_xyz:app")
    assert r.returncode == 4, r.stderr
    assert "no_such_module_xyz" in r.stderr


def test_print_config_reflects_cli_flags():
    cfg = print_config("-w", "3", "--preload", "--max-requests", "5", "--max-requests-jitter", "2", "-n", "nm", "-t", "7", APP)
    assert cfg["workers"] == "3"
    assert cfg["preload_app"] == "True"
    assert cfg["max_requests"] == "5" and cfg["max_requests_jitter"] == "2"
    assert cfg["proc_name"] == "nm" and cfg["timeout"] == "7"


def test_hup_rereads_raw_env_from_config(server, conf, tmp_path):
    """HUP re-executes the config file: a changed raw_env reaches the new workers."""
    c = conf("raw_env = ['MASTER_T=one']\n")
    envapp = tmp_path / "envapp_m.py"
    envapp.write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    b = os.environ.get('MASTER_T', '-').encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(b)))])\n"
        "    return [b]\n"
    )
    srv = server("envapp_m:app", "-c", str(c), cwd=tmp_path)
    assert requests.get(srv.url, timeout=10).text == "one"
    c.write_text("raw_env = ['MASTER_T=two']\n")
    srv.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while requests.get(srv.url, timeout=10).text != "two":
        assert time.monotonic() < deadline, "raw_env change not applied after HUP"
        time.sleep(0.1)
