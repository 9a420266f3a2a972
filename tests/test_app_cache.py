"""The app cache, ``ferrocorn.cache`` (issue 17): one store for every worker of an instance,
exercised over HTTP through tests/apps/app_cache_app.py (each request runs one cache operation in
whichever worker serves it and says which worker that was).

Checked: a value written by one worker is read by the others (every worker class); ``incr`` and
``add`` are atomic across workers; ``cached(lock=True)`` computes a cold key once for 40
concurrent requests over 4 workers; expiry and ``touch``; values survive a SIGKILLed worker and a
HUP; ``clear()`` leaves the response cache alone; a value too large is refused, not fatal; and
outside ferrocorn the module works per process with a warning.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from apps.master.helpers import wait_workers
from concurrent_calls import fire
from concurrent_calls import json_op as op

APP = "app_cache_app:app"
ASGI_APP = "app_cache_app:asgi_app"






@pytest.fixture
def calls_file(tmp_path) -> Path:
    return tmp_path / "calls.log"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# Classes whose concurrent requests are certain to spread over the workers when each holds its
# worker busy; a gevent worker's connections are accepted off the Python thread, so one worker
# may take them all (its cross-process reads are the other classes' proof).
SPREADS = {"sync", "gthread", "asgi"}

WORKER_CLASSES = {
    "sync": (APP, ["-w", "4", "-k", "sync"]),
    "gthread": (APP, ["-w", "2", "-k", "gthread", "--threads", "8"]),
    "gevent": (APP, ["-w", "2", "-k", "gevent"]),
    "asgi": (ASGI_APP, ["-w", "2", "-k", "asgi"]),
}


def started(server, app, args, env=None):
    """A server whose workers have all started, and, for the classes whose requests spread
    (``SPREADS``), have each answered a request: a worker still booting when a burst comes
    leaves the whole burst to its sibling."""
    srv = server(app, *args, env=env)
    workers = int(args[args.index("-w") + 1])
    wait_workers(srv.proc.pid, workers)
    if args[args.index("-k") + 1] in SPREADS:
        answered: set[int] = set()
        deadline = time.monotonic() + 15
        while len(answered) < workers and time.monotonic() < deadline:
            answered |= {a["pid"] for a in fire(2 * workers, lambda i: op(srv, "/backend", hold="0.05"))}
        assert len(answered) == workers, f"only {len(answered)} of {workers} workers answered"
    return srv


@pytest.mark.parametrize("worker_class", list(WORKER_CLASSES))
def test_one_worker_writes_and_every_worker_reads(server, worker_class):
    app, args = WORKER_CLASSES[worker_class]
    srv = started(server, app, args)
    assert op(srv, "/backend")["result"] == "shared"
    assert op(srv, "/set", k="greeting", v='{"text": "hello", "n": [1, 2]}')["result"] is True
    assert op(srv, "/set", k="number", v="41")["result"] is True
    # Each get holds its worker for a moment, so concurrent gets spread over the workers.
    gets = fire(12, lambda i: op(srv, "/get", k="greeting", hold="0.1"))
    assert all(got["result"] == {"text": "hello", "n": [1, 2]} for got in gets), gets
    if worker_class in SPREADS:
        assert len({got["pid"] for got in gets}) >= 2, "the gets never reached a second worker"
    assert op(srv, "/incr", k="number")["result"] == 42
    assert op(srv, "/get", k="nobody-set-this")["result"] == "<missing>"


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_incr_is_atomic_across_workers(server, worker_class):
    app, args = WORKER_CLASSES[worker_class]
    srv = server(app, *args)
    results = fire(8, lambda i: [op(srv, "/incr", k="hits")["result"] for _ in range(50)])
    seen = sorted(v for batch in results for v in batch)
    assert seen == list(range(1, 401)), "an increment was lost or repeated"
    assert op(srv, "/get", k="hits")["result"] == 400
    assert op(srv, "/decr", k="hits", d="150")["result"] == 250
    assert op(srv, "/set", k="word", v='"text"')["result"] is True
    assert op(srv, "/incr", k="word")["status"] == 409  # ValueError: not an integer


def test_add_succeeds_once_across_workers(server):
    srv = server(APP, "-w", "4")
    results = fire(16, lambda i: op(srv, "/add", k="owner", v=str(i)))
    winners = [r for r in results if r["result"] is True]
    assert len(winners) == 1, results
    owner = op(srv, "/get", k="owner")["result"]
    assert owner == results.index(winners[0])


@pytest.mark.parametrize("worker_class", list(WORKER_CLASSES))
def test_cached_with_lock_computes_once(server, calls_file, worker_class):
    app, args = WORKER_CLASSES[worker_class]
    srv = started(server, app, args, env={"APP_CACHE_CALLS": str(calls_file)})
    answers = fire(40, lambda i: op(srv, "/computed", x="cold", sleep="0.5", hold="0.05"))
    assert {a["result"] for a in answers} == {"value-of-cold"}
    if worker_class in SPREADS:
        assert len({a["pid"] for a in answers}) >= 2, "all requests were served by one worker"
    assert [line.split()[0] for line in lines(calls_file)] == ["cold"], lines(calls_file)


def test_cached_lock_of_a_killed_computer_is_taken_over(server, calls_file):
    srv = server(APP, "-w", "2", "-k", "gthread", "--threads", "4", env={"APP_CACHE_CALLS": str(calls_file)})
    master = srv.proc.pid
    wait_workers(master, 2)
    victim_outcome: list = []

    def victim_request():
        try:
            requests.get(srv.url + "/computed", params={"x": "k", "sleep": "20"}, timeout=30)
            victim_outcome.append("answered")
        except requests.ConnectionError:
            victim_outcome.append("cut off")

    slow = threading.Thread(target=victim_request, daemon=True)
    slow.start()
    deadline = time.monotonic() + 10
    while not lines(calls_file) and time.monotonic() < deadline:
        time.sleep(0.02)
    (first,) = lines(calls_file)
    os.kill(int(first.split()[1]), signal.SIGKILL)
    started = time.monotonic()
    got = op(srv, "/computed", x="k", sleep="0.1")
    assert got["result"] == "value-of-k"
    assert time.monotonic() - started < 10, "waited out the dead computer's lock"
    assert len(lines(calls_file)) == 2
    slow.join(30)
    assert victim_outcome == ["cut off"]  # its worker was killed mid-computation


def test_expiry_and_touch(server):
    srv = server(APP, "-w", "2")
    op(srv, "/set", k="short", v='"s"', t="1")
    op(srv, "/set", k="touched", v='"t"', t="1")
    op(srv, "/set", k="forever", v='"f"')
    assert op(srv, "/touch", k="touched", t="60")["result"] is True
    assert op(srv, "/touch", k="absent", t="60")["result"] is False
    time.sleep(2.2)  # whole-second expiry: a 1 s value is gone after 2 s
    assert op(srv, "/get", k="short")["result"] == "<missing>"
    assert op(srv, "/get", k="touched")["result"] == "t"
    assert op(srv, "/get", k="forever")["result"] == "f"
    assert op(srv, "/set", k="zero", v='"z"', t="0")["result"] is False
    assert op(srv, "/get", k="zero")["result"] == "<missing>"


def test_values_survive_a_killed_worker_and_hup(server):
    srv = server(APP, "-w", "2")
    master = srv.proc.pid
    old = wait_workers(master, 2)
    op(srv, "/set", k="kept", v='"across restarts"')
    os.kill(old[0], signal.SIGKILL)
    wait_workers(master, 2, exclude=(old[0],))
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(r"Handling signal: hup")
    new = wait_workers(master, 2, timeout=20, exclude=tuple(old))
    assert not set(new) & set(old)
    for _ in range(4):
        assert op(srv, "/get", k="kept")["result"] == "across restarts"


def test_clear_leaves_the_response_cache_alone(server, calls_file):
    srv = server(APP, "-w", "2", "--cache", env={"APP_CACHE_CALLS": str(calls_file)})
    first = requests.get(srv.url + "/response", timeout=10)
    assert first.headers["X-Cache-Status"] == "MISS"
    op(srv, "/set", k="a", v="1")
    op(srv, "/clear")
    assert op(srv, "/get", k="a")["result"] == "<missing>"
    again = requests.get(srv.url + "/response", timeout=10)
    assert again.headers["X-Cache-Status"] == "HIT"
    assert [line.split()[0] for line in lines(calls_file)] == ["response"]


def test_a_value_larger_than_the_store_allows_is_refused(server):
    srv = server(APP, "-w", "1", "--cache-max-size", "64k")
    assert op(srv, "/set", k="big", size="40000")["result"] is False
    assert op(srv, "/get", k="big")["result"] == "<missing>"
    assert op(srv, "/set", k="small", v='"fits"')["result"] is True
    assert op(srv, "/get", k="small")["result"] == "fits"


def test_outside_ferrocorn_it_works_per_process_with_a_warning(tmp_path):
    script = (
        "import warnings\n"
        "from ferrocorn import cache\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    cache.set('k', {'v': 1})\n"
        "    cache.get('k')\n"
        "assert [str(w.message) for w in caught] == [\n"
        "    'ferrocorn.cache is not running under a ferrocorn worker: values are kept in this process only'\n"
        "], caught\n"
        "assert cache.backend() == 'process'\n"
        "assert cache.get('k') == {'v': 1} and cache.incr('n', 3) == 3 and cache.get('n') == 3\n"
        "@cache.cached(timeout=60)\n"
        "def f(x, calls=[]):\n"
        "    calls.append(x)\n"
        "    return len(calls)\n"
        "assert (f(1), f(1), f(2)) == (1, 1, 2)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
