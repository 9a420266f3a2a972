"""The response cache's metrics and control commands, black-box: a real ``ferrocorn --cache -w 2``
with ``--metrics-bind`` and a control socket, in front of tests/apps/cache_backend.py (which
logs every app call across the workers).

- ``ferrocorn_cache_requests_total{status}`` counts every answer by its X-Cache-Status (HIT,
  MISS, EXPIRED, STALE, UPDATING, REVALIDATED, BYPASS made on purpose, PURGE not counted), with the lock
  waits, stores, not-stored answers and purges, exactly; the store's gauges read from the
  store; the counts survive a SIGKILLed worker;
- ``ferrocorn ctl cache purge KEY | --prefix P | --all``: the next request is a MISS that
  reaches the app, what was not purged is still a HIT; ``ctl cache stats`` shows the entries;
- without ``--cache`` the cache commands say so and the counters stay at 0.

Timing: one sleep of LATE seconds for the entries that must expire (freshness counts whole
seconds); concurrency follows the app's call log, never a guessed delay; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import requests

from apps.cache_backend import calls
from apps.obs.obshelpers import ctl, metric_snapshot, start, top_under_load, value, wait_until, wait_workers
from conftest import APPS_DIR
from test_cache import LATE, Background, fetch, purge, url, wait_calls, xcs

pytest.importorskip("prometheus_client", reason="pip install prometheus_client (requirements-test.txt)")

APP = "cache_backend:app"
STATUSES = ("hit", "miss", "expired", "stale", "updating", "revalidated", "bypass")
STORE_BYTES = 8 << 20


@pytest.fixture
def counts(tmp_path):
    d = tmp_path / "counts"
    d.mkdir()
    return d


def start_cached(server, counts, *args, ctl_sock=None, cache=True):
    flags = (["--cache", "--cache-max-size", str(STORE_BYTES)] if cache else []) + [str(a) for a in args]
    return start(
        server, *flags, workers=2, ctl=ctl_sock, app=APP, cwd=APPS_DIR,
        env={"CACHE_BACKEND_COUNTS": str(counts)},
    )


def cache_counts(srv) -> dict:
    """The cache's counters from one scrape: {status: n} plus the other ``_total`` series."""
    snap = metric_snapshot(srv)
    out = {s: value(snap, "ferrocorn_cache_requests_total", status=s) for s in STATUSES}
    for name in ("lock_waits", "stores", "not_stored", "purges", "evictions", "repairs"):
        out[name] = value(snap, f"ferrocorn_cache_{name}_total")
    out["lock_wait_seconds"] = value(snap, "ferrocorn_cache_lock_wait_seconds_total")
    for name in ("entries", "bytes", "capacity_bytes"):
        out[name] = value(snap, f"ferrocorn_cache_{name}")
    return out


def wait_counts(srv, want: dict, timeout=5.0) -> dict:
    """Scrape until the counters in ``want`` have exactly those values (a store is counted
    just after its response went out); returns the last scrape, or fails showing it."""
    last = {}

    def matches():
        nonlocal last
        last = cache_counts(srv)
        return last if all(last[k] == v for k, v in want.items()) else None

    try:
        return wait_until(matches, timeout, f"cache counters {want}")
    except AssertionError as e:
        diff = {k: (last.get(k), v) for k, v in want.items() if last.get(k) != v}
        raise AssertionError(f"cache counters (have, want) differ: {diff}\n{last}") from e


def test_every_answer_is_counted_by_its_x_cache_status(server, counts):
    srv = start_cached(server, counts, "-k", "gthread", "--threads", "4", "--keep-alive", "30",
                       "--cache-key", "$scheme$host$uri", "--cache-use-stale", "updating,error",
                       "--cache-revalidate")
    zero = wait_counts(srv, {s: 0 for s in STATUSES})
    assert zero["capacity_bytes"] == STORE_BYTES and zero["entries"] == 0

    # The requests in sequence share one kept-alive connection, so each is read only after the
    # one before was stored: none of them can find a fill still in progress and wait for it.
    session = requests.Session()
    seen = []

    def get(target, method="GET", headers=None):
        data = b"payload" if method == "POST" else None
        r = session.request(method, srv.url + target, headers=headers, data=data, timeout=15)
        assert r.status_code == 200, (target, r.status_code, r.content[:200])
        seen.append(xcs(r))
        return r

    # MISS then two HITs; a POST bypasses the cache; an answer that may not be stored
    get(url("/m", cc="max-age=60"))
    get(url("/m", cc="max-age=60"))
    get(url("/m", cc="max-age=60"))
    get(url("/m", cc="max-age=60"), "POST")
    get(url("/n", cc="no-store"))
    # four entries that expire together: a refresh (EXPIRED), a failed refresh answered with
    # the stale copy (STALE), a copy answered while another request refreshes it (UPDATING),
    # and a copy with an ETag the app confirms with a 304 (REVALIDATED)
    for path in ("/e", "/s", "/u"):
        get(url(path, cc="max-age=1"))
    revalidated = url("/r", cc="max-age=1", etag="v1", cc304="max-age=60")
    get(revalidated)
    time.sleep(LATE)
    get(url("/e", cc="max-age=1"))
    get(revalidated)
    get(url("/s", cc="max-age=1"), headers={"X-Backend": "raise=1"})
    refresh = Background(fetch, srv, url("/u", cc="max-age=1"), headers={"X-Backend": "sleep=2"})
    wait_calls(counts, 2, path="/u")
    get(url("/u", cc="max-age=1"))
    seen.append(xcs(refresh.result()))
    # a request that waits for another one filling its key (the cache lock), then HITs
    filler = Background(fetch, srv, url("/l", cc="max-age=60"), headers={"X-Backend": "sleep=1"})
    wait_calls(counts, 1, path="/l")
    get(url("/l", cc="max-age=60"))
    seen.append(xcs(filler.result()))
    assert seen == [
        "MISS", "HIT", "HIT", "BYPASS", "MISS",
        "MISS", "MISS", "MISS", "MISS", "EXPIRED", "REVALIDATED", "STALE", "UPDATING", "EXPIRED",
        "HIT", "MISS",
    ], seen
    # a PURGE is a purge, not an answer with a cache status
    assert purge(srv, url("/m", cc="max-age=60")).status == 200

    want = {
        "hit": 3, "miss": 7, "expired": 2, "stale": 1, "updating": 1, "revalidated": 1, "bypass": 1,
        "lock_waits": 1,
        # /m, /e twice, /s, /u twice, /r once (its 304 renewed the copy), /l; the no-store
        # answer was offered and refused
        "stores": 8, "not_stored": 1,
        "purges": 1,
        # /e /s /u /r /l and the hit-for-miss mark of /n (/m was purged)
        "entries": 6, "evictions": 0, "repairs": 0, "capacity_bytes": STORE_BYTES,
    }
    have = wait_counts(srv, want)
    assert 0.3 < have["lock_wait_seconds"] < 2.0, have
    assert 0 < have["bytes"] < STORE_BYTES
    assert sum(have[s] for s in STATUSES) == len(seen)

    # counters survive a worker's death (folded into the master's totals when it is reaped)
    victim = wait_workers(srv, 2)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in wait_workers(srv, 2), 15, "the killed worker replaced")
    after = wait_counts(srv, want)
    assert after["lock_wait_seconds"] == have["lock_wait_seconds"]
    assert calls(counts) == 12


def test_ctl_cache_purge_a_key_a_prefix_and_all(server, counts, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start_cached(server, counts, ctl_sock=sock)

    def key(target):  # the default --cache-key, $scheme$host$request_uri ($host has no port)
        return f"http127.0.0.1{target}"

    vary = url("/v", vary="Accept-Language", cc="max-age=60")
    plain = [url(p, cc="max-age=60") for p in ("/p/a", "/p/b", "/q/c")]
    for lang in ("en", "fr"):
        assert xcs(fetch(srv, vary, headers={"Accept-Language": lang})) == "MISS"
    for target in plain:
        assert xcs(fetch(srv, target)) == "MISS"
        assert xcs(fetch(srv, target)) == "HIT"
    stats = wait_until(
        lambda: (lambda d: d if d["store"]["entries"] == 6 else None)(ctl(sock, "cache", "stats", json_out=True).data),
        5, "6 entries: the Vary mark, its 2 variants, 3 plain keys")
    assert stats["ok"] is True and stats["requests"]["miss"] == 5 and stats["requests"]["hit"] == 3
    assert stats["store"]["capacity_bytes"] == STORE_BYTES
    human = ctl(sock, "cache", "stats").stdout
    assert "6 entries" in human and "HIT" in human, human

    # a key takes all its Vary variants with it
    p = ctl(sock, "cache", "purge", key(vary), json_out=True)
    assert p.data["purged"] == 2, p.data
    for n, lang in enumerate(("en", "fr"), start=3):
        assert xcs(fetch(srv, vary, headers={"Accept-Language": lang})) == "MISS", lang
        assert calls(counts, path="/v") == n
    assert ctl(sock, "cache", "purge", key(url("/never", cc="max-age=60")), json_out=True).data["purged"] == 0

    # a prefix
    p = ctl(sock, "cache", "purge", "--prefix", key("/p/"))
    assert p.stdout.strip() == "purged 2 cached responses", p.stdout
    assert xcs(fetch(srv, plain[0])) == "MISS" and calls(counts, path="/p/a") == 2
    assert xcs(fetch(srv, plain[2])) == "HIT" and calls(counts, path="/q/c") == 1

    # everything: /v's two variants, /p/a again, /q/c
    p = ctl(sock, "cache", "purge", "--all", json_out=True)
    assert p.data["purged"] == 4, p.data
    for target in plain:
        assert xcs(fetch(srv, target)) == "MISS", target
    assert calls(counts, path="/q/c") == 2
    final = wait_until(
        lambda: (lambda d: d if d["store"]["entries"] == 3 else None)(ctl(sock, "cache", "stats", json_out=True).data),
        5, "the 3 entries stored after --all")
    assert final["purges"] == 4, final
    assert value(metric_snapshot(srv), "ferrocorn_cache_purges_total") == 4

    usage = ctl(sock, "cache", "purge", check=False)
    assert usage.returncode == 2 and "--all" in usage.stderr, usage


def test_without_cache_the_commands_say_so_and_nothing_is_counted(server, counts, tmp_path):
    sock = tmp_path / "c.ctl"
    srv = start_cached(server, counts, ctl_sock=sock, cache=False)
    r = fetch(srv, url("/off", cc="max-age=60"))
    assert r.status_code == 200 and xcs(r) is None
    for words in (("cache", "stats"), ("cache", "purge", "--all"), ("cache", "purge", "http://x/")):
        p = ctl(sock, *words, check=False)
        assert p.returncode == 1, p
        assert "the response cache is off (start with --cache)" in p.stderr, p.stderr
    have = cache_counts(srv)
    assert all(have[s] == 0 for s in STATUSES) and have["purges"] == 0, have
    assert value(metric_snapshot(srv), "ferrocorn_requests_total") >= 1


def test_top_shows_the_cache_line(server, counts, tmp_path):
    """``ferrocorn top`` with ``--cache``: a cache line under the header with the hit ratio,
    HITs per second between two frames while hits flow, and the store's entries."""
    sock = tmp_path / "c.ctl"
    srv = start_cached(server, counts, ctl_sock=sock)
    target = url("/top", cc="max-age=60")
    assert xcs(fetch(srv, target)) == "MISS"
    def hit(s):
        assert s.get(srv.url + target, timeout=10).headers["X-Cache-Status"] == "HIT"

    p = top_under_load(sock, hit)
    lines = re.findall(r"^cache .*$", p.stdout, re.M)
    assert len(lines) == 2, p.stdout  # one per frame
    first, last = lines
    assert "HIT/s -" in first, first  # no rate before a second frame
    m = re.match(r"cache   hit ratio (\d+\.\d)%   HIT/s ([\d.]+)   MISS/s ([\d.]+)   other/s [\d.]+   store 1 entries", last)
    assert m, last
    assert float(m.group(1)) > 50 and float(m.group(2)) > 0 and float(m.group(3)) == 0, last
    assert calls(counts) == 1
