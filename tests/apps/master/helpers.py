"""Shared helpers for tests/test_master_*.py (imported as ``apps.master.helpers``)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from procs import children, pid_alive, ppid_of, wait_until  # noqa: F401 (re-exported)

MASTER_DIR = Path(__file__).resolve().parent
APP = "mapp:app"


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def is_worker(pid: int) -> bool:
    return "worker" in cmdline(pid) or comm(pid).startswith("ferrocorn: work")


def worker_pids(master_pid: int) -> list[int]:
    return [p for p in children(master_pid) if is_worker(p)]


def wait_workers(master_pid: int, n: int, timeout=15.0, exclude=()) -> list[int]:
    """Wait until the master has exactly ``n`` live worker children (none in ``exclude``)."""

    def ok():
        ws = [p for p in worker_pids(master_pid) if p not in exclude]
        return ws if len(ws) == n and len(worker_pids(master_pid)) == n else None

    return wait_until(ok, timeout, f"{n} workers of master {master_pid}")


def booted_pids(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"Booting worker with pid: (\d+)", text)]


def get(url, path="/", timeout=10, **kw):
    return requests.get(url + path, timeout=timeout, **kw)


def get_pid(url, timeout=10) -> int:
    r = requests.get(url + "/", timeout=timeout, headers={"Connection": "close"})
    assert r.status_code == 200, r.text
    return int(r.text)


def serving_pids(url, tries=40) -> set[int]:
    return {get_pid(url) for _ in range(tries)}


def kill_quietly(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_pid(pid: int, timeout=5.0):
    """SIGTERM, then SIGKILL, a process we started (not necessarily our child)."""
    if not pid_alive(pid):
        return
    kill_quietly(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    for c in children(pid):
        kill_quietly(c)
    kill_quietly(pid)


@pytest.fixture
def reaper():
    """Collect pids (e.g. daemonized or USR2 masters) to stop at teardown, children first-ish."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in reversed(pids):
            kids = children(pid)
            terminate_pid(pid)
            for k in kids:
                terminate_pid(k, 1.0)


class Load:
    """Bounded continuous load: ``threads`` clients, ``total`` requests overall.

    Each thread uses a keep-alive ``requests.Session``; a request that fails with a
    connection error is counted as a failure (no retries).
    """

    def __init__(self, url, threads=8, total=1500, path="/", deadline=90.0):
        self.url = url + path
        self.threads = threads
        self.total = total
        self.deadline = time.monotonic() + deadline
        self.lock = threading.Lock()
        self.issued = 0
        self.ok = 0
        self.failures: list[str] = []
        self.pids: list[int] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _take(self):
        with self.lock:
            if self.issued >= self.total or time.monotonic() > self.deadline:
                return False
            self.issued += 1
            return True

    def _run(self):
        s = requests.Session()
        try:
            while self._take():
                try:
                    r = s.get(self.url, timeout=15)
                    if r.status_code != 200:
                        raise RuntimeError(f"status {r.status_code}: {r.text[:100]!r}")
                    pid = int(r.text)
                    with self.lock:
                        self.ok += 1
                        self.pids.append(pid)
                except Exception as e:  # noqa: BLE001
                    with self.lock:
                        self.failures.append(repr(e)[:300])
        finally:
            s.close()

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def done_fraction(self):
        with self.lock:
            return self.issued / self.total

    def join(self, timeout=120.0):
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, end - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load threads did not finish"
        return self
