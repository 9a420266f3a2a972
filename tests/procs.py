"""Process and polling helpers shared by the black-box tests: bounded waits and /proc reads."""

import os
import random
import socket
import time


def wait_until(pred, timeout=10.0, msg="condition", interval=0.05):
    """Poll ``pred`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{msg} not reached within {timeout}s (last={last!r})")
        time.sleep(interval)


def _stat(pid: int):
    """(state, ppid) from /proc/PID/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def ppid_of(pid: int):
    """Parent pid, or None when the process is gone."""
    st = _stat(pid)
    return None if st is None else st[1]


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (a master's workers), sorted."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[0] not in ("Z", "X") and st[1] == pid:
                out.append(int(name))
    return sorted(out)


def restartable_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768-60999 by default), for a
    server a test stops and starts again on the same port: while it is down, no outgoing
    connection on this host can be given that port as its local one and take it."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(200):
        port = random.randint(10000, max(10001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")
