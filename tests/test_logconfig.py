"""Python logging configuration as Gunicorn accepts it: logconfig_dict in the config file,
--log-config-json, and --log-config (fileConfig ini). The error log goes to `gunicorn.error`,
access lines to `gunicorn.access`."""

import json
import pathlib
import subprocess
import sys
import time

import requests

APPS = pathlib.Path(__file__).parent / "apps"


def _start(*args):
    """Start ferrocorn; its log lines go wherever the logging config says, not to stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "ferrocorn", *args, "--no-control-socket", "default_app"],
        cwd=str(APPS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _wait_for(path, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text() if path.exists() else '(missing)'}")


def _dict_config(log_file):
    return {
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["to_file"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["to_file"], "propagate": False},
        },
        "handlers": {"to_file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "tagged"}},
        "formatters": {"tagged": {"format": "TAGGED %(name)s %(levelname)s %(message)s"}},
    }


def test_logconfig_dict_routes_error_and_access_logs(tmp_path):
    log_file = tmp_path / "app.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"logconfig_dict = {_dict_config(log_file)!r}\nbind = '127.0.0.1:0'\n")
    proc = _start("-c", str(conf))
    try:
        text = _wait_for(log_file, "Listening at: http://127.0.0.1:")
        port = int(text.split("Listening at: http://127.0.0.1:")[1].split()[0])
        assert requests.get(f"http://127.0.0.1:{port}/logged", timeout=10).status_code == 200
        text = _wait_for(log_file, "GET /logged")
        assert "TAGGED gunicorn.error INFO Starting ferrocorn" in text
        assert "TAGGED gunicorn.access INFO 127.0.0.1" in text
    finally:
        _stop(proc)


def test_log_config_json_file(tmp_path):
    log_file = tmp_path / "json.log"
    json_conf = tmp_path / "logging.json"
    json_conf.write_text(json.dumps(_dict_config(log_file)))
    proc = _start("--log-config-json", str(json_conf), "-b", "127.0.0.1:0")
    try:
        _wait_for(log_file, "TAGGED gunicorn.error INFO Listening at")
    finally:
        _stop(proc)


def test_log_config_ini_file(tmp_path):
    log_file = tmp_path / "ini.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root,error\n\n"
        "[handlers]\nkeys=file\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=INFO\nhandlers=\n\n"
        "[logger_error]\nlevel=INFO\nhandlers=file\npropagate=0\nqualname=gunicorn.error\n\n"
        f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(log_file)!r},)\n\n"
        "[formatter_plain]\nformat=INI %(levelname)s %(message)s\n"
    )
    proc = _start("--log-config", str(ini), "-b", "127.0.0.1:0")
    try:
        _wait_for(log_file, "INI INFO Listening at")
    finally:
        _stop(proc)


def test_bad_log_config_names_the_setting(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "ferrocorn", "--log-config", str(tmp_path / "missing.ini"), "default_app"],
        cwd=str(APPS),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert "logconfig" in r.stderr
