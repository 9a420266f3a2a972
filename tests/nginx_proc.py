"""nginx started by a test: a non-daemon master with its own prefix (a temp dir) and a config
written from a template, on a free loopback port, checked to listen, stopped by its PID.
Shared by the differential tests against nginx (tests/test_cache_nginx_diff.py,
tests/test_balance_nginx_diff.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NginxProcess:
    """``binary`` run on ``template`` formatted with ``user``, ``prefix``, ``port`` and
    ``fields``; ``dirs`` are made in the prefix first."""

    def __init__(self, binary: str, template: str, *, name: str, dirs=("tmp",), **fields):
        self.prefix = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        for d in dirs:
            (self.prefix / d).mkdir()
        self.port = free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(template.format(user=user, prefix=self.prefix, port=self.port, **fields))
        self.out = open(self.prefix / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=self.out,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def logs(self) -> str:
        text = []
        for name in ("stderr.log", "error.log"):
            p = self.prefix / name
            if p.exists():
                text.append(f"--- nginx {name}\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(text)

    def _wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"nginx exited with {self.proc.returncode}\n{self.conf.read_text()}\n{self.logs()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nginx not listening on {self.port} within {timeout}s\n{self.logs()}")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.out.close()
        shutil.rmtree(self.prefix, ignore_errors=True)
