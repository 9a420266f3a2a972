"""Fixtures for the black-box ferrocorn suite: start the real server as a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

LISTEN_RE = re.compile(r"Listening at: (\S+) \((\d+)\)")


def ferrocorn_cmd() -> list[str]:
    """The command used to launch the server (override with FERROCORN_CMD)."""
    override = os.environ.get("FERROCORN_CMD")
    if override:
        return override.split()
    return [sys.executable, "-m", "ferrocorn"]


def _has_bind(args) -> bool:
    return any(a in ("-b", "--bind") or a.startswith("--bind=") or (a.startswith("-b") and len(a) > 2) for a in args)


class ServerError(AssertionError):
    pass


class Server:
    """A running (or exited) ferrocorn process."""

    def __init__(self, app, args, env, cwd, pass_fds=(), log_path=None, cmd=None):
        self.app = app
        self.args = list(args)
        self._tmpdir = tempfile.mkdtemp(prefix="ferrocorn-test-")
        self.stderr_path = Path(self._tmpdir) / "stderr.log"
        self.stdout_path = Path(self._tmpdir) / "stdout.log"
        self.log_path = Path(log_path) if log_path else self.stderr_path
        full_env = dict(os.environ)
        full_env.pop("SCRIPT_NAME", None)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self.cmd = (cmd or ferrocorn_cmd()) + self.args + ([app] if app is not None else [])
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
        self.listen_url = None
        self.listen_urls: list[str] = []
        self.port = None
        self.url = None

    # -- output -----------------------------------------------------------------------
    def stderr_text(self) -> str:
        self._err.flush()
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def stdout_text(self) -> str:
        self._out.flush()
        return self.stdout_path.read_bytes().decode("utf-8", "replace")

    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout: float = 5.0, source=None) -> re.Match:
        """Wait until ``pattern`` (regex) appears in stderr (or ``source()``)."""
        source = source or self.stderr_text
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(source())
            if m:
                return m
            if time.monotonic() > deadline:
                raise ServerError(f"pattern {pattern!r} not seen within {timeout}s; log:\n{source()[-4000:]}")
            time.sleep(0.05)

    # -- lifecycle --------------------------------------------------------------------
    def wait_listening(self, count: int = 1, timeout: float = START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            # one line per bind, or (Gunicorn style) one line with comma-separated URLs
            found = [u for urls, _ in LISTEN_RE.findall(self.log_text()) for u in urls.split(",") if u]
            if len(found) >= count:
                self.listen_urls = found
                self.listen_url = self.listen_urls[0]
                m = re.match(r"http://(\[[^\]]+\]|[^:]+):(\d+)$", self.listen_url)
                if m:
                    self.host = m.group(1).strip("[]")
                    self.port = int(m.group(2))
                    self.url = f"http://{m.group(1)}:{self.port}"
                return self
            if self.proc.poll() is not None:
                raise ServerError(
                    f"ferrocorn exited with {self.proc.returncode} before listening.\n"
                    f"cmd: {self.cmd}\nstderr:\n{self.stderr_text()[-6000:]}"
                )
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise ServerError(
                    f"ferrocorn did not report 'Listening at' within {timeout}s.\n"
                    f"cmd: {self.cmd}\nstderr:\n{self.stderr_text()[-6000:]}"
                )
            time.sleep(0.02)

    def ports(self) -> list[int]:
        out = []
        for u in self.listen_urls:
            m = re.match(r"http://(\[[^\]]+\]|[^:]+):(\d+)$", u)
            if m:
                out.append(int(m.group(2)))
        return out

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL)
            raise ServerError(
                f"ferrocorn did not exit within {timeout}s.\ncmd: {self.cmd}\nstderr:\n{self.stderr_text()[-4000:]}"
            ) from None

    @property
    def returncode(self):
        return self.proc.poll()

    def send_signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT):
        """Stop by PID: ``sig`` first, SIGKILL to the process group after ``timeout``."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout)
        return self.proc.returncode

    def cleanup(self):
        self.stop()
        for f in (self._err, self._out):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self._tmpdir, ignore_errors=True)


class ServerFactory:
    def __init__(self):
        self.servers: list[Server] = []

    def __call__(
        self,
        app,
        *args,
        env=None,
        cwd=APPS_DIR,
        expect_fail=False,
        bind=True,
        pass_fds=(),
        log_path=None,
        listen_count=1,
        cmd=None,
    ) -> Server:
        args = [str(a) for a in args]
        if bind and not _has_bind(args):
            args = ["-b", "127.0.0.1:0"] + args
        srv = Server(app, args, env, cwd, pass_fds=pass_fds, log_path=log_path, cmd=cmd)
        self.servers.append(srv)
        if expect_fail:
            srv.wait_exit()
        else:
            srv.wait_listening(count=listen_count)
        return srv

    def stop_all(self):
        for srv in self.servers:
            srv.cleanup()
        self.servers.clear()


@pytest.fixture
def server():
    """Factory: ``server(app, *args, env=None, cwd=tests/apps, expect_fail=False)``."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def module_server():
    """Module-scoped variant of :func:`server` for servers shared by a test module."""
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return d


def wait_for_file(path: Path, timeout: float = 5.0, predicate=None):
    """Wait until ``path`` holds a complete line (or ``predicate(text)`` holds); returns its text or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            # a file is created before its line is written: wait for a complete line by default
            if (predicate is None and text.endswith("\n")) or (predicate is not None and predicate(text)):
                return text
        time.sleep(0.05)
    return path.read_text() if path.exists() else None


def pytest_configure(config):
    config.addinivalue_line("markers", "corpus: Gunicorn request-corpus replay (run alone with -m corpus)")
