"""The built-in response cache (``--cache``, issue 17): nginx proxy_cache's behaviour inside the
server, black-box, with tests/apps/cache_backend.py (a URL is a test case: its query sets the
response headers, status, delays, failures; every app call is logged across processes, so a
test counts app calls for a URL over all workers).

What is checked, one test each:

- storability and freshness, table-driven (X-Accel-Expires > Cache-Control > Expires >
  --cache-valid; Set-Cookie, Vary: *); short TTLs expiring into EXPIRED;
- Vary variants; Authorization and POST (BYPASS, not stored); HEAD answered from a GET entry;
  the --cache-bypass and --cache-no-store conditions; --cache-valid's fallback;
- the cache lock (50 concurrent misses over 4 workers, one app call), its timeout,
  --no-cache-lock; hit-for-miss (concurrent requests for an uncacheable key do not queue);
- stale copies: UPDATING while another request refreshes, STALE with a background update,
  STALE when the refresh fails (--cache-use-stale error,http_500);
- a worker SIGKILLed while filling leaves no lock behind; entries survive HUP, a SIGKILLed and a
  recycled worker;
- PURGE (a key, its Vary variants, a prefix, 403 from a client not allowed);
- --cache-max-size eviction (and a hot entry outliving a cold one), --cache-max-entry-size,
  --cache-inactive;
- streamed bodies stored whole; a client gone mid-fill or an app failing mid-body leaves no
  truncated entry.

Timing: only explicit short TTLs (max-age=1 and a sleep of LATE seconds, > 2 s, since freshness
counts whole seconds) and app sleeps, with wide margins; concurrency is driven by a barrier and
the call log (a test waits until the app *has* been entered, never for a guessed delay).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import threading
import time
from urllib.parse import urlencode

import pytest
import requests

from apps.cache_backend import call_pids, calls
from apps.master.helpers import wait_workers
from procs import pid_alive, ppid_of, wait_until
from wire import Conn, connect, request_bytes
from concurrent_calls import fire as fire_raising

APP = "cache_backend:app"
LATE = 2.3  # seconds after which a max-age=1 entry is certainly stale (whole-second freshness)
BYPASS_ARGS = ["--cache-bypass", "$http_x_nocache $cookie_nocache $arg_nocache"]


# -- helpers --------------------------------------------------------------------------------------


def url(path: str, **params) -> str:
    """``path?query`` with the params in order (``raise_`` -> ``raise``)."""
    pairs = [(k.rstrip("_"), str(v)) for k, v in params.items()]
    return path + ("?" + urlencode(pairs) if pairs else "")


def fetch(srv, target, method="GET", headers=None, timeout=15.0) -> requests.Response:
    """One request on its own connection (so requests spread over the workers)."""
    h = {"Connection": "close"}
    h.update(headers or {})
    data = b"payload" if method in ("POST", "PUT") else None
    return requests.request(method, srv.url + target, headers=h, data=data, timeout=timeout)


def xcs(resp) -> str | None:
    return resp.headers.get("X-Cache-Status")


def complete(body: bytes, size: int | None = None) -> bool:
    """A whole backend body: starts with its call line, ends with END, has ``size`` bytes."""
    return body.startswith(b"call=") and body.endswith(b"END\n") and (size is None or len(body) == size)


def purge(srv, target, timeout=10.0):
    """PURGE ``target`` (sent raw: ``*`` must reach the server as is), with the Host header
    requests sends, so the key matches the one the GETs were stored under."""
    with Conn(srv.port, timeout=timeout) as c:
        c.send(request_bytes("PURGE", target, headers=[("Host", f"127.0.0.1:{srv.port}"), ("Connection", "close")]))
        return c.read_response()


def purged_count(resp) -> int:
    return json.loads(resp.body)["purged"]


class Background:
    """Run ``fn`` on a thread; ``result()`` returns its value or raises its exception."""

    def __init__(self, fn, *args, **kw):
        self._out = None
        self._exc = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kw):
        try:
            self._out = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001
            self._exc = e

    def result(self, timeout=20.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background request did not finish"
        if self._exc is not None:
            raise self._exc
        return self._out




def fire(n: int, fn, timeout=30.0) -> list:
    """``fn(i)`` on ``n`` threads released together; results, exceptions in place."""
    return fire_raising(n, fn, timeout, raise_errors=False)


def wait_calls(counts, n, timeout=10.0, **filters):
    """Wait until the app has been entered ``n`` times for the filter (it logs on entry)."""
    return wait_until(lambda: calls(counts, **filters) >= n, timeout, f"{n} app call(s) for {filters}")


@pytest.fixture
def counts(tmp_path):
    d = tmp_path / "counts"
    d.mkdir()
    return d


@pytest.fixture
def start(server, counts):
    """``start(*args, app=APP)``: a ferrocorn with ``--cache`` and the counting backend."""

    def _start(*args, app=APP, cache=True, **kw):
        flags = (["--cache"] if cache else []) + [str(a) for a in args]
        return server(app, *flags, env={"CACHE_BACKEND_COUNTS": str(counts)}, **kw)

    return _start


@pytest.fixture(scope="module")
def shared_counts(tmp_path_factory):
    return tmp_path_factory.mktemp("cache-counts")


@pytest.fixture(scope="module")
def shared_server(module_server, shared_counts):
    return module_server(
        APP,
        "-w",
        "2",
        "--cache",
        "--cache-valid",
        "200=60,404=30",
        *BYPASS_ARGS,
        "--cache-no-store",
        "$http_x_nostore",
        env={"CACHE_BACKEND_COUNTS": str(shared_counts)},
    )


@pytest.fixture
def shared(shared_server):
    """One server for the tests that only need the defaults plus --cache-valid, the bypass and
    no-store conditions; each test uses its own paths. Checked alive before and after each test,
    so a crash is pinned on the test that caused it (not on every test after it)."""

    def gone(when):
        return f"the shared server exited ({shared_server.returncode}) {when}:\n{shared_server.stderr_text()[-3000:]}"

    assert shared_server.returncode is None, gone("before this test")
    yield shared_server
    if shared_server.returncode is not None:
        pytest.fail(gone("during this test"))


@pytest.fixture
def base(request):
    """A path prefix unique to the test (and its parameters)."""
    return "/" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)


# -- storability and freshness --------------------------------------------------------------------

# (id, query params in order, X-Cache-Status of the 2nd request, app calls after 2 requests),
# under --cache-valid 200=60,404=30
FRESHNESS = [
    ("max_age", {"cc": "max-age=60"}, "HIT", 1),
    ("s_maxage_wins_over_max_age_0", {"cc": "s-maxage=60, max-age=0"}, "HIT", 1),
    ("s_maxage_0_wins_over_max_age", {"cc": "max-age=60, s-maxage=0"}, "MISS", 2),
    ("max_age_0", {"cc": "max-age=0"}, "MISS", 2),
    ("no_store", {"cc": "no-store, max-age=60"}, "MISS", 2),
    ("no_cache", {"cc": "no-cache, max-age=60"}, "MISS", 2),
    ("private", {"cc": "private, max-age=60"}, "MISS", 2),
    ("public_alone_falls_back_to_cache_valid", {"cc": "public"}, "HIT", 1),
    ("malformed_max_age", {"cc": "max-age=ten"}, "MISS", 2),
    ("directive_case_ignored", {"cc": "Max-Age=60"}, "HIT", 1),
    ("expires_in_the_future", {"expires": "+60"}, "HIT", 1),
    ("expires_in_the_past", {"expires": "-60"}, "MISS", 2),
    ("expires_not_a_date", {"expires": "0"}, "MISS", 2),
    ("max_age_wins_over_a_later_past_expires", {"cc": "max-age=60", "expires": "-60"}, "HIT", 1),
    ("max_age_wins_over_an_earlier_past_expires", {"expires": "-60", "cc": "max-age=60"}, "HIT", 1),
    ("x_accel_expires", {"xae": "60"}, "HIT", 1),
    ("x_accel_expires_0_wins_over_max_age", {"xae": "0", "cc": "max-age=60"}, "MISS", 2),
    ("x_accel_expires_wins_over_a_later_no_cache", {"xae": "60", "cc": "no-cache"}, "HIT", 1),
    ("x_accel_expires_wins_over_an_earlier_no_cache", {"cc": "no-cache", "xae": "60"}, "HIT", 1),
    ("x_accel_expires_absolute", {"xae": "@+60"}, "HIT", 1),
    ("x_accel_expires_absolute_past_is_stored_expired", {"xae": "@-60"}, "EXPIRED", 2),
    ("x_accel_expires_unparsable_is_ignored", {"xae": "soon"}, "HIT", 1),
    ("set_cookie_never_stored", {"cookie": "1", "cc": "max-age=60"}, "MISS", 2),
    ("set_cookie_beats_x_accel_expires", {"xae": "60", "cookie": "1"}, "MISS", 2),
    ("vary_star_never_stored", {"vary": "*", "cc": "max-age=60"}, "MISS", 2),
    ("no_headers_200_by_cache_valid", {}, "HIT", 1),
    ("no_headers_404_by_cache_valid", {"status": "404"}, "HIT", 1),
    ("no_headers_500_not_in_cache_valid", {"status": "500"}, "MISS", 2),
    ("max_age_on_a_500", {"status": "500", "cc": "max-age=60"}, "HIT", 1),
]


@pytest.mark.parametrize("params, second, n_calls", [r[1:] for r in FRESHNESS], ids=[r[0] for r in FRESHNESS])
def test_freshness_rule(shared, shared_counts, base, params, second, n_calls):
    target = url(base, **params)
    r1 = fetch(shared, target)
    r2 = fetch(shared, target)
    assert (xcs(r1), xcs(r2)) == ("MISS", second), (r1.headers, r2.headers)
    assert calls(shared_counts, path=base) == n_calls
    assert r1.status_code == r2.status_code == int(params.get("status", 200))
    assert complete(r1.content) and complete(r2.content)
    if second == "HIT":
        assert r2.content == r1.content, "a HIT must be the stored answer"
    else:
        assert r2.content != r1.content, "not a HIT: the app answered again"


@pytest.mark.parametrize(
    "params",
    [{"cc": "max-age=1"}, {"xae": "1"}, {"expires": "+1"}],
    ids=["max_age_1", "x_accel_expires_1", "expires_in_1s"],
)
def test_short_freshness_expires_then_the_refresh_is_stored(shared, shared_counts, base, params):
    target = url(base, **params)
    r1 = fetch(shared, target)
    r2 = fetch(shared, target)
    assert (xcs(r1), xcs(r2)) == ("MISS", "HIT")
    time.sleep(LATE)
    r3 = fetch(shared, target)
    assert xcs(r3) == "EXPIRED"
    assert r3.content != r1.content and complete(r3.content)
    r4 = fetch(shared, target)
    assert xcs(r4) == "HIT" and r4.content == r3.content
    assert calls(shared_counts, path=base) == 2


# -- variants, requests that bypass, methods ------------------------------------------------------


def test_vary_variants_are_stored_separately(shared, shared_counts, base):
    target = url(base, vary="Accept-Language", cc="max-age=60")
    seq, bodies = [], {}
    for lang in ["en", "en", "fr", "fr", "en", "fr"]:
        r = fetch(shared, target, headers={"Accept-Language": lang})
        seq.append(xcs(r))
        assert f"al={lang}".encode() in r.content, "a variant answered for the wrong request"
        bodies.setdefault(lang, r.content)
        assert r.content == bodies[lang]
    assert seq == ["MISS", "HIT", "MISS", "HIT", "HIT", "HIT"]
    assert calls(shared_counts, path=base) == 2


def test_set_cookie_is_passed_on_but_not_stored(shared, shared_counts, base):
    target = url(base, cookie="abc", cc="max-age=60")
    for _ in range(2):
        r = fetch(shared, target)
        assert xcs(r) == "MISS" and r.cookies.get("c") == "abc"
    assert calls(shared_counts, path=base) == 2


def test_authorization_is_neither_served_from_nor_stored(shared, shared_counts, base):
    target = url(base, cc="max-age=60")
    auth = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert xcs(fetch(shared, target, headers=auth)) == "BYPASS"
    assert xcs(fetch(shared, target, headers=auth)) == "BYPASS"
    assert xcs(fetch(shared, target)) == "MISS", "an Authorization request's answer was stored"
    assert xcs(fetch(shared, target)) == "HIT"
    r = fetch(shared, target, headers=auth)
    assert xcs(r) == "BYPASS", "an Authorization request was answered from the cache"
    assert calls(shared_counts, path=base) == 4


def test_post_bypasses_and_is_not_stored(shared, shared_counts, base):
    target = url(base, cc="max-age=60")
    r = fetch(shared, target, "POST")
    assert (r.status_code, xcs(r)) == (200, "BYPASS")
    assert xcs(fetch(shared, target, "POST")) == "BYPASS"
    assert xcs(fetch(shared, target)) == "MISS", "a POST answer was stored"
    assert xcs(fetch(shared, target)) == "HIT"
    assert xcs(fetch(shared, target, "POST")) == "BYPASS", "a POST was answered from the cache"
    assert calls(shared_counts, path=base, method="POST") == 3
    assert calls(shared_counts, path=base, method="GET") == 1


def test_head_after_get_is_a_hit(shared, shared_counts, base):
    target = url(base, cc="max-age=60", size=5000)
    g = fetch(shared, target)
    h = fetch(shared, target, "HEAD")
    assert (xcs(g), xcs(h)) == ("MISS", "HIT")
    assert h.status_code == 200 and h.content == b""
    assert h.headers.get("Content-Length") == "5000"
    assert h.headers.get("X-Backend-Call") == g.headers.get("X-Backend-Call")
    assert calls(shared_counts, path=base) == 1


def test_a_conditional_request_for_a_stored_response_gets_304(shared, shared_counts, base):
    # nginx's not_modified filter on cached responses: If-None-Match compared weakly with the
    # stored ETag, If-Modified-Since equal to Last-Modified; both must hold when both are sent.
    lm = "Tue, 15 Nov 1994 12:45:26 GMT"
    target = base + "?" + urlencode([("cc", "max-age=60"), ("h", 'ETag:"v1"'), ("h", f"Last-Modified:{lm}")])
    first = fetch(shared, target)
    assert (first.status_code, xcs(first), first.headers.get("ETag")) == (200, "MISS", '"v1"')
    for headers in ({"If-None-Match": '"v1"'}, {"If-None-Match": 'W/"v0", W/"v1"'},
                    {"If-None-Match": "*"}, {"If-Modified-Since": lm},
                    {"If-None-Match": '"v1"', "If-Modified-Since": lm}):
        r = fetch(shared, target, headers=headers)
        assert (r.status_code, xcs(r), r.content) == (304, "HIT", b""), headers
        assert r.headers.get("ETag") == '"v1"' and r.headers.get("Last-Modified") == lm
        assert "Content-Type" not in r.headers and "Content-Length" not in r.headers
    for headers in ({"If-None-Match": '"v2"'}, {"If-Modified-Since": "Wed, 16 Nov 1994 00:00:00 GMT"},
                    {"If-None-Match": '"v1"', "If-Modified-Since": "Mon, 14 Nov 1994 00:00:00 GMT"}):
        r = fetch(shared, target, headers=headers)
        assert (r.status_code, xcs(r), r.content) == (200, "HIT", first.content), headers
    assert calls(shared_counts, path=base) == 1


def test_revalidation_renews_an_expired_copy_on_304(start, counts):
    # --cache-revalidate (nginx's proxy_cache_revalidate): the refresh of an expired copy
    # carries If-None-Match from its ETag; the app's 304 renews the copy, answered REVALIDATED
    # with the stored body, fresh again for the 304's own max-age.
    srv = start("-w", "2", "--cache-revalidate")
    target = url("/rv", cc="max-age=1", etag="v1", cc304="max-age=60")
    first = fetch(srv, target)
    assert xcs(first) == "MISS"
    time.sleep(LATE)
    again = fetch(srv, target)
    assert (again.status_code, xcs(again)) == (200, "REVALIDATED")
    assert again.content == first.content and again.headers.get("ETag") == '"v1"'
    assert again.headers.get("Content-Type") == "text/plain"
    assert calls(counts, path="/rv") == 2
    assert xcs(fetch(srv, target)) == "HIT"  # renewed for 60 s by the 304
    assert calls(counts, path="/rv") == 2
    # The client's own conditional request still gets its 304 from the renewed copy.
    r = fetch(srv, target, headers={"If-None-Match": '"v1"'})
    assert (r.status_code, xcs(r)) == (304, "HIT")


def test_a_changed_validator_replaces_the_copy(start, counts):
    srv = start("-w", "1", "--cache-revalidate")
    target = url("/rv2", cc="max-age=1", etag="v1")
    first = fetch(srv, target)
    time.sleep(LATE)
    # The app's ETag changed: the conditional refresh gets a full 200, stored in its place.
    changed = fetch(srv, target, headers={"X-Backend": "etag=v2"})
    assert (changed.status_code, xcs(changed)) == (200, "EXPIRED")
    assert changed.headers.get("ETag") == '"v2"' and changed.content != first.content
    assert calls(counts, path="/rv2") == 2


def test_without_revalidate_an_expired_copy_is_fetched_whole(start, counts):
    srv = start("-w", "1")
    target = url("/rv3", cc="max-age=1", etag="v1", cc304="max-age=60")
    first = fetch(srv, target)
    time.sleep(LATE)
    again = fetch(srv, target)
    assert (again.status_code, xcs(again)) == (200, "EXPIRED")
    assert again.content != first.content  # a new app answer, not the stored one


def test_background_revalidation_renews_the_copy(start, counts):
    srv = start("-w", "1", "--cache-revalidate", "--cache-use-stale", "updating",
                "--cache-background-update")
    target = url("/rv4", cc="max-age=1", etag="v1", cc304="max-age=60")
    first = fetch(srv, target)
    time.sleep(LATE)
    stale = fetch(srv, target)
    assert (xcs(stale), stale.content) == ("STALE", first.content)
    wait_until(lambda: calls(counts, path="/rv4") == 2, timeout=10)
    renewed = fetch(srv, target)
    assert (xcs(renewed), renewed.content) == ("HIT", first.content)


def test_a_head_miss_goes_to_the_app_and_is_not_stored(shared, shared_counts, base):
    target = url(base, cc="max-age=60")
    h = fetch(shared, target, "HEAD")
    assert (h.status_code, xcs(h), h.content) == (200, "MISS", b"")
    g1 = fetch(shared, target)
    g2 = fetch(shared, target)
    assert (xcs(g1), xcs(g2)) == ("MISS", "HIT")
    assert complete(g2.content) and g2.content == g1.content
    assert calls(shared_counts, path=base, method="HEAD") == 1
    assert calls(shared_counts, path=base, method="GET") == 1


# (id, steps as (request headers, extra query), statuses, app calls)
BYPASS_CASES = [
    ("header_1_bypasses_and_still_stores", [({"X-Nocache": "1"}, {}), ({}, {})], ["BYPASS", "HIT"], 1),
    ("header_0_is_no_bypass", [({"X-Nocache": "0"}, {}), ({"X-Nocache": "0"}, {})], ["MISS", "HIT"], 1),
    ("empty_header_is_no_bypass", [({"X-Nocache": ""}, {}), ({}, {})], ["MISS", "HIT"], 1),
    (
        "cookie_bypasses",
        [({"Cookie": "nocache=1"}, {}), ({"Cookie": "nocache=1"}, {}), ({}, {})],
        ["BYPASS", "BYPASS", "HIT"],
        2,
    ),
    ("arg_bypasses", [({}, {"nocache": "1"}), ({}, {"nocache": "1"})], ["BYPASS", "BYPASS"], 2),
    (
        "bypass_of_a_stored_entry_refreshes_it",
        [({}, {}), ({"X-Nocache": "yes"}, {}), ({}, {})],
        ["MISS", "BYPASS", "HIT"],
        2,
    ),
]


@pytest.mark.parametrize("steps, statuses, n_calls", [c[1:] for c in BYPASS_CASES], ids=[c[0] for c in BYPASS_CASES])
def test_bypass_conditions(shared, shared_counts, base, steps, statuses, n_calls):
    got, bodies = [], []
    for headers, extra in steps:
        r = fetch(shared, url(base, cc="max-age=60", **extra), headers=headers)
        got.append(xcs(r))
        bodies.append(r.content)
    assert got == statuses
    assert calls(shared_counts, path=base) == n_calls
    if statuses[-2:] == ["BYPASS", "HIT"]:
        # nginx's proxy_cache_bypass: the bypassing request's answer is what got stored
        assert bodies[-1] == bodies[-2]


def test_no_store_condition(shared, shared_counts, base):
    target = url(base, cc="max-age=60")
    assert xcs(fetch(shared, target, headers={"X-Nostore": "1"})) == "MISS"
    assert xcs(fetch(shared, target)) == "MISS", "--cache-no-store condition ignored"
    assert xcs(fetch(shared, target)) == "HIT"
    r = fetch(shared, target, headers={"X-Nostore": "1"})
    assert xcs(r) == "HIT", "--cache-no-store only decides storing, not serving"
    assert calls(shared_counts, path=base) == 2


def test_cache_valid_any(start, counts):
    srv = start("--cache-valid", "any=60")
    for status in (200, 404, 500, 503):
        target = url(f"/any{status}", status=status)
        r1, r2 = fetch(srv, target), fetch(srv, target)
        assert (r1.status_code, xcs(r1), xcs(r2)) == (status, "MISS", "HIT"), status
        assert calls(counts, path=f"/any{status}") == 1


def test_cache_valid_per_status(start, counts):
    srv = start("--cache-valid", "200=300,301=3600,404=60")
    expected = {200: "HIT", 404: "HIT", 500: "MISS", 403: "MISS"}
    for status, second in expected.items():
        target = url(f"/per{status}", status=status)
        fetch(srv, target)
        assert xcs(fetch(srv, target)) == second, status


def test_without_cache_valid_a_response_without_freshness_is_not_stored(start, counts):
    srv = start()
    assert [xcs(fetch(srv, "/bare")) for _ in range(2)] == ["MISS", "MISS"]
    target = url("/fresh", cc="max-age=60")
    assert [xcs(fetch(srv, target)) for _ in range(2)] == ["MISS", "HIT"]
    assert calls(counts, path="/bare") == 2 and calls(counts, path="/fresh") == 1


def test_every_response_carries_x_cache_status(shared, base):
    for method, target in [("GET", url(base, status=404)), ("GET", url(base, raise_=1)), ("POST", base),
                           ("PUT", base), ("OPTIONS", base), ("DELETE", base)]:
        r = fetch(shared, target, method)
        assert xcs(r) in {"MISS", "BYPASS", "HIT", "EXPIRED"}, (method, target, r.status_code, r.headers)


def test_config_file_keys(start, counts, tmp_path):
    conf = tmp_path / "cache_conf.py"
    conf.write_text('cache = True\ncache_valid = "any=60"\ncache_key = "$scheme$host$uri"\n')
    srv = start("-c", conf, cache=False)
    assert xcs(fetch(srv, "/cf?v=1")) == "MISS"
    r = fetch(srv, "/cf?v=2")  # the key ignores the query
    assert xcs(r) == "HIT" and b"target=/cf?v=1 " in r.content
    assert calls(counts, path="/cf") == 1


# -- the cache lock, hit-for-miss -----------------------------------------------------------------


def test_lock_collapses_concurrent_misses_into_one_app_call(start, counts):
    srv = start("-w", "4")
    target = url("/lock", cc="max-age=60", sleep=0.5)
    wait_workers(srv.proc.pid, 4)
    results = fire(50, lambda i: fetch(srv, target, timeout=20))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert [r.status_code for r in results] == [200] * 50
    bodies = {r.content for r in results}
    assert len(bodies) == 1, f"{len(bodies)} different bodies: the app ran more than once"
    assert complete(bodies.pop())
    assert calls(counts, path="/lock") == 1
    statuses = sorted(xcs(r) for r in results)
    assert statuses.count("MISS") == 1 and set(statuses) <= {"MISS", "HIT"}, statuses


def test_lock_timeout_sends_a_waiter_to_the_app_without_storing(start, counts):
    srv = start("-w", "2", "-k", "gthread", "--threads", "4", "--cache-key", "$scheme$host$uri",
                "--cache-lock-timeout", "1")
    filler = Background(fetch, srv, url("/lt", cc="max-age=60", sleep=4))
    wait_calls(counts, 1, path="/lt")
    t0 = time.monotonic()
    waiter = fetch(srv, url("/lt", cc="max-age=60"))
    took = time.monotonic() - t0
    assert waiter.status_code == 200 and xcs(waiter) == "MISS"
    assert b"sleep=4" not in waiter.content, "the waiter got the filler's answer before it existed"
    assert 0.7 <= took < 3.0, f"waited {took:.2f}s with --cache-lock-timeout 1 (filler takes 4s)"
    first = filler.result()
    assert xcs(first) == "MISS"
    hit = fetch(srv, url("/lt", cc="max-age=60"))
    assert xcs(hit) == "HIT"
    assert hit.content == first.content, "the timed-out waiter's answer was stored"
    assert calls(counts, path="/lt") == 2


def test_no_cache_lock_lets_concurrent_misses_all_reach_the_app(start, counts):
    srv = start("-w", "2", "-k", "gthread", "--threads", "8", "--no-cache-lock")
    target = url("/nolock", cc="max-age=60", sleep=1)
    results = fire(6, lambda i: fetch(srv, target))
    assert all(not isinstance(r, BaseException) and r.status_code == 200 for r in results), results
    assert sorted(xcs(r) for r in results) == ["MISS"] * 6
    assert calls(counts, path="/nolock") == 6
    assert xcs(fetch(srv, target)) == "HIT"


def test_hit_for_miss_lets_requests_for_an_uncacheable_key_skip_the_lock(start, counts):
    srv = start("-w", "2", "-k", "gthread", "--threads", "16", "--cache-lock-timeout", "8")
    target = url("/hfm", cc="no-store", sleep=0.5)
    assert xcs(fetch(srv, target)) == "MISS"
    t0 = time.monotonic()
    results = fire(20, lambda i: fetch(srv, target, timeout=30))
    took = time.monotonic() - t0
    assert all(not isinstance(r, BaseException) and r.status_code == 200 for r in results), results
    assert [xcs(r) for r in results] == ["MISS"] * 20
    assert calls(counts, path="/hfm") == 21
    # one app sleep is 0.5 s; waiting on the lock one after another would take 20 x 0.5 s, or
    # the 8 s lock timeout
    assert took < 3.0, f"20 concurrent requests for an uncacheable key took {took:.2f}s: they queued"


def test_a_storable_answer_replaces_the_hit_for_miss_marker(start, counts):
    srv = start("--cache-key", "$scheme$host$uri")
    assert xcs(fetch(srv, url("/hfr", cc="no-store"))) == "MISS"
    assert xcs(fetch(srv, url("/hfr", cc="no-store"))) == "MISS"
    stored = fetch(srv, url("/hfr", cc="max-age=60"))
    assert xcs(stored) == "MISS"
    hit = fetch(srv, url("/hfr", cc="max-age=60"))
    assert xcs(hit) == "HIT" and hit.content == stored.content
    assert calls(counts, path="/hfr") == 3


# -- stale copies ---------------------------------------------------------------------------------


def test_stale_while_updating(start, counts):
    srv = start("-w", "2", "-k", "gthread", "--threads", "4", "--cache-key", "$scheme$host$uri",
                "--cache-use-stale", "updating")
    old = fetch(srv, url("/swu", cc="max-age=1"))
    assert xcs(old) == "MISS"
    time.sleep(LATE)
    refresh = Background(fetch, srv, url("/swu", cc="max-age=1", sleep=3))
    wait_calls(counts, 2, path="/swu")  # the refresh is in the app now
    t0 = time.monotonic()
    during = fetch(srv, url("/swu", cc="max-age=1"))
    took = time.monotonic() - t0
    assert xcs(during) == "UPDATING" and during.content == old.content
    assert took < 2.0, f"UPDATING took {took:.2f}s: it waited for the refresh"
    new = refresh.result()
    assert xcs(new) == "EXPIRED" and new.content != old.content and complete(new.content)
    after = fetch(srv, url("/swu", cc="max-age=1"))
    assert xcs(after) == "HIT" and after.content == new.content
    assert calls(counts, path="/swu") == 2


def test_stale_with_background_update(start, counts):
    srv = start("-w", "2", "-k", "gthread", "--threads", "4", "--cache-key", "$scheme$host$uri",
                "--cache-use-stale", "updating", "--cache-background-update")
    old = fetch(srv, url("/bg", cc="max-age=1"))
    time.sleep(LATE)
    t0 = time.monotonic()
    stale = fetch(srv, url("/bg", cc="max-age=1", sleep=2))
    took = time.monotonic() - t0
    assert xcs(stale) == "STALE" and stale.content == old.content
    assert took < 1.5, f"the STALE answer took {took:.2f}s: it waited for the 2 s refresh"
    wait_calls(counts, 2, path="/bg")

    def refreshed():
        r = fetch(srv, url("/bg", cc="max-age=1"))
        assert xcs(r) in ("UPDATING", "HIT"), xcs(r)
        return r if xcs(r) == "HIT" else None

    new = wait_until(refreshed, 8, "the background refresh stored")
    assert new.content != old.content and b"sleep=2" in new.content
    assert calls(counts, path="/bg") == 2


@pytest.mark.parametrize("failure", [{"raise_": 1}, {"status": 500}], ids=["app_raises", "app_answers_500"])
def test_stale_when_the_refresh_fails(start, counts, failure):
    srv = start("-w", "2", "--cache-key", "$scheme$host$uri", "--cache-use-stale", "error,http_500")
    old = fetch(srv, url("/se", cc="max-age=1"))
    assert xcs(old) == "MISS"
    time.sleep(LATE)
    r = fetch(srv, url("/se", cc="max-age=1", **failure))
    assert (r.status_code, xcs(r)) == (200, "STALE"), r.content[:200]
    assert r.content == old.content
    assert calls(counts, path="/se") == 2
    again = fetch(srv, url("/se", cc="max-age=1"))
    assert xcs(again) == "EXPIRED" and again.content != old.content
    assert xcs(fetch(srv, url("/se", cc="max-age=1"))) == "HIT"


def test_without_use_stale_a_failed_refresh_is_passed_on(start, counts):
    srv = start("--cache-key", "$scheme$host$uri")
    fetch(srv, url("/nse", cc="max-age=1"))
    time.sleep(LATE)
    r = fetch(srv, url("/nse", cc="max-age=1", raise_=1))
    assert (r.status_code, xcs(r)) == (500, "EXPIRED")


# -- workers dying, HUP ---------------------------------------------------------------------------


def test_a_sigkilled_filler_leaves_no_lock_held(start, counts):
    srv = start("-w", "2", "--cache-key", "$scheme$host$uri", "--cache-lock-timeout", "8")
    master = srv.proc.pid
    wait_workers(master, 2)

    def hung():
        try:
            return fetch(srv, url("/kf", cc="max-age=60", hang=1), timeout=20)
        except requests.RequestException as e:
            return e

    victim_request = Background(hung)
    wait_calls(counts, 1, path="/kf")
    (pid,) = call_pids(counts, path="/kf")
    assert pid != master and ppid_of(pid) == master, f"{pid} is not a worker of {master}"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5, "the filler gone")
    t0 = time.monotonic()
    r = fetch(srv, url("/kf", cc="max-age=60"))
    took = time.monotonic() - t0
    assert (r.status_code, xcs(r)) == (200, "MISS")
    assert took < 3.0, f"the next request waited {took:.2f}s: the dead filler's lock was still held"
    assert b"hang" not in r.content and complete(r.content)
    hit = fetch(srv, url("/kf", cc="max-age=60"))
    assert xcs(hit) == "HIT" and hit.content == r.content
    assert calls(counts, path="/kf") == 2
    victim_request.result()


def test_entries_survive_a_sigkilled_worker(start, counts):
    srv = start("-w", "1")
    master = srv.proc.pid
    (worker,) = wait_workers(master, 1)
    target = url("/sk", cc="max-age=60")
    first = fetch(srv, target)
    assert xcs(first) == "MISS"
    os.kill(worker, signal.SIGKILL)
    (new,) = wait_workers(master, 1, exclude=(worker,))
    r = fetch(srv, target)
    assert xcs(r) == "HIT" and r.content == first.content
    assert calls(counts, path="/sk") == 1
    assert new != worker


def test_entries_survive_a_recycled_worker(start, counts):
    srv = start("-w", "1", "--max-requests", "2")
    master = srv.proc.pid
    (worker,) = wait_workers(master, 1)
    target = url("/mr", cc="max-age=60")
    first = fetch(srv, target)
    fetch(srv, url("/mr-other", cc="no-store"))  # the 2nd request: the worker retires
    wait_workers(master, 1, exclude=(worker,))
    r = fetch(srv, target)
    assert xcs(r) == "HIT" and r.content == first.content
    assert calls(counts, path="/mr") == 1


def test_entries_survive_hup(start, counts):
    srv = start("-w", "2")
    master = srv.proc.pid
    old = wait_workers(master, 2)
    target = url("/hup", cc="max-age=60")
    first = fetch(srv, target)
    assert (xcs(first), xcs(fetch(srv, target))) == ("MISS", "HIT")
    srv.send_signal(signal.SIGHUP)
    srv.wait_log(r"Handling signal: hup")
    wait_workers(master, 2, timeout=20, exclude=tuple(old))
    for _ in range(4):
        r = fetch(srv, target)
        assert xcs(r) == "HIT" and r.content == first.content
    assert calls(counts, path="/hup") == 1


# -- PURGE ----------------------------------------------------------------------------------------


def test_purge_a_key(start, counts):
    srv = start("-w", "2")
    target = url("/pk", cc="max-age=60")
    fetch(srv, target)
    assert xcs(fetch(srv, target)) == "HIT"
    p = purge(srv, target)
    assert (p.status, purged_count(p)) == (200, 1), p
    assert xcs(fetch(srv, target)) == "MISS"
    assert calls(counts, path="/pk") == 2
    nothing = purge(srv, url("/never-stored", cc="max-age=60"))
    assert (nothing.status, purged_count(nothing)) == (404, 0), nothing


def test_purge_removes_every_vary_variant(start, counts):
    srv = start()
    target = url("/pv", vary="Accept-Language", cc="max-age=60")
    for lang in ("en", "fr", "de"):
        fetch(srv, target, headers={"Accept-Language": lang})
        assert xcs(fetch(srv, target, headers={"Accept-Language": lang})) == "HIT"
    p = purge(srv, target)
    assert (p.status, purged_count(p)) == (200, 3), p
    for lang in ("en", "fr", "de"):
        assert xcs(fetch(srv, target, headers={"Accept-Language": lang})) == "MISS", lang


def test_purge_a_prefix(start, counts):
    srv = start()
    inside = ["/pp/a", "/pp/b", "/pp/c/d"]
    outside = ["/ppz/a", "/px/a", "/pp"]
    for path in inside + outside:
        fetch(srv, url(path, cc="max-age=60"))
    p = purge(srv, "/pp/*")
    assert (p.status, purged_count(p)) == (200, 3), p
    for path in inside:
        assert xcs(fetch(srv, url(path, cc="max-age=60"))) == "MISS", path
    for path in outside:
        assert xcs(fetch(srv, url(path, cc="max-age=60"))) == "HIT", path
    empty = purge(srv, "/nothing-here/*")
    assert (empty.status, purged_count(empty)) == (404, 0)


def test_purge_from_a_client_not_allowed_is_403(start, counts):
    srv = start("--cache-purge-allow", "10.9.9.9")
    target = url("/pf", cc="max-age=60")
    fetch(srv, target)
    assert purge(srv, target).status == 403
    assert purge(srv, "/p*").status == 403
    assert xcs(fetch(srv, target)) == "HIT", "a refused PURGE removed the entry"


# -- sizes, eviction, inactivity ------------------------------------------------------------------

ENTRY = 64 * 1024
STORE = 1024 * 1024


def test_eviction_keeps_the_store_within_max_size(start, counts):
    srv = start("--cache-max-size", STORE)
    targets = [url(f"/ev/{i}", cc="max-age=600", size=ENTRY) for i in range(40)]
    for t in targets:
        r = fetch(srv, t)
        assert xcs(r) == "MISS" and complete(r.content, ENTRY)
    # a HEAD miss is not stored: probing with HEAD does not change what is held
    held = [xcs(fetch(srv, t, "HEAD")) == "HIT" for t in targets]
    n = sum(held)
    assert n * ENTRY <= STORE, f"{n} entries of {ENTRY} bytes held in a {STORE}-byte store"
    assert n >= 8, f"only {n} entries of 64 KiB held in 1 MiB: {held}"
    assert held[-1], "the newest entry was evicted"
    assert not any(held[:10]), f"the oldest entries were not evicted first: {held}"
    r = fetch(srv, targets[0])
    assert xcs(r) == "MISS" and complete(r.content, ENTRY)


def test_a_hot_entry_outlives_a_cold_one(start, counts):
    srv = start("--cache-max-size", STORE)
    hot, cold = url("/sc/hot", cc="max-age=600", size=ENTRY), url("/sc/cold", cc="max-age=600", size=ENTRY)
    fetch(srv, hot)
    fetch(srv, cold)
    for i in range(40):
        fetch(srv, url(f"/sc/{i}", cc="max-age=600", size=ENTRY))
        r = fetch(srv, hot)
        assert complete(r.content, ENTRY)
    assert calls(counts, path="/sc/hot") == 1, "an entry requested after every write was evicted"
    assert xcs(fetch(srv, hot, "HEAD")) == "HIT"
    assert xcs(fetch(srv, cold, "HEAD")) == "MISS"


@pytest.mark.parametrize("stream", [0, 1], ids=["content_length", "streamed"])
def test_max_entry_size_serves_large_answers_without_storing_them(start, counts, stream):
    srv = start("--cache-max-entry-size", "100000")
    big = url("/big", cc="max-age=60", size=200_000, stream=stream, chunks=8)
    for _ in range(2):
        r = fetch(srv, big)
        assert (r.status_code, xcs(r)) == (200, "MISS")
        assert complete(r.content, 200_000), len(r.content)
    assert calls(counts, path="/big") == 2
    small = url("/small", cc="max-age=60", size=50_000, stream=stream)
    fetch(srv, small)
    assert xcs(fetch(srv, small)) == "HIT"


def test_inactive_entries_are_dropped(start, counts):
    srv = start("--cache-inactive", "1")
    target = url("/inactive", cc="max-age=600")
    assert [xcs(fetch(srv, target)) for _ in range(2)] == ["MISS", "HIT"]
    time.sleep(2.5)
    assert xcs(fetch(srv, target)) == "MISS"
    assert calls(counts, path="/inactive") == 2


# -- bodies: streamed, cut short ------------------------------------------------------------------


def test_a_streamed_body_is_stored_and_served_whole(shared, shared_counts, base):
    target = url(base, stream=1, chunks=5, size=10_000, cc="max-age=60")
    r1, r2 = fetch(shared, target), fetch(shared, target)
    assert (xcs(r1), xcs(r2)) == ("MISS", "HIT")
    assert complete(r2.content, 10_000) and r2.content == r1.content
    assert calls(shared_counts, path=base) == 1


@pytest.mark.parametrize("stream", [0, 1], ids=["whole", "streamed"])
def test_asgi_answers_are_cached_too(start, counts, stream):
    srv = start("-k", "asgi", app="cache_backend:asgi_app")
    target = url("/asgi", cc="max-age=60", stream=stream, size=3000)
    r1, r2 = fetch(srv, target), fetch(srv, target)
    assert (xcs(r1), xcs(r2)) == ("MISS", "HIT")
    assert complete(r2.content, 3000) and r2.content == r1.content
    assert calls(counts, path="/asgi") == 1


def test_a_client_gone_mid_fill_leaves_no_partial_entry(start, counts):
    srv = start("-w", "2", "-k", "gthread", "--threads", "4")
    size = 20_000
    target = url("/gone", stream=1, chunks=10, chunk_sleep=0.2, size=size, cc="max-age=60")
    s = connect(srv.port, timeout=10)
    try:
        s.sendall(request_bytes("GET", target, headers=[("Host", f"127.0.0.1:{srv.port}")]))
        got = b""
        while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) == 0:
            chunk = s.recv(65536)
            assert chunk, "closed before the first body bytes"
            got += chunk
        assert b"\r\nx-cache-status: miss\r\n" in got.split(b"\r\n\r\n", 1)[0].lower() + b"\r\n", got[:500]
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # an abortive close (RST), mid-body
    for _ in range(2):
        r = fetch(srv, target)
        assert r.status_code == 200 and xcs(r) in ("MISS", "HIT"), xcs(r)
        assert complete(r.content, size), f"{xcs(r)} with a truncated body ({len(r.content)} bytes)"
    assert xcs(fetch(srv, target)) == "HIT"
    assert calls(counts, path="/gone") <= 2


def test_an_app_failing_mid_body_leaves_no_partial_entry(start, counts):
    srv = start("-w", "2")
    size = 8000
    target = url("/midfail", stream=1, chunks=4, size=size, cc="max-age=60")
    try:
        bad = fetch(srv, target, headers={"X-Backend": "raise_at=2"})
        assert len(bad.content) < size, "the app raised mid-body but the answer is whole"
    except requests.RequestException:
        pass  # the connection is cut: what a client sees of a body that broke off
    r = fetch(srv, target)
    assert xcs(r) == "MISS", "a body that broke off was stored"
    assert complete(r.content, size)
    assert xcs(fetch(srv, target)) == "HIT"
    assert calls(counts, path="/midfail") == 2
