"""The response cache against nginx's proxy_cache: the same request sequences, the same
X-Cache-Status sequences.

nginx (``/usr/sbin/nginx``) runs as a non-daemon master with a temporary prefix on a loopback
port, in front of gunicorn (ferrocorn without ``--cache`` when gunicorn is not installed) serving
``tests/apps/cache_backend.py``; ferrocorn runs with ``--cache`` and the same app. Each case is
a short sequence of requests to its own URL; steps marked ``late`` run after one shared sleep
(``LATE_SLEEP``) that expires every ``max-age=1`` entry and nothing else.

The tests:

- ``test_nginx_side_matches_expected_table`` needs only nginx: it proves the expected table IS
  nginx's behaviour (run it alone with ``-k nginx_side``).
- ``test_ferrocorn_side_matches_expected_table`` needs only ferrocorn: the spec's table (the
  nginx rows, with the spec's deliberate departures).
- ``test_ferrocorn_matches_nginx_live`` runs both and compares the sequences (and the number of
  app calls) case by case, for the rows the spec shares with nginx.

nginx is configured to match the spec where its defaults differ:

- ``proxy_cache_key $scheme$host$request_uri`` (nginx's default uses ``$proxy_host``).
- ``proxy_cache_bypass $http_x_nocache $cookie_nocache $arg_nocache $http_authorization`` and
  ``proxy_no_cache $http_authorization $http_x_nostore``: nginx caches requests with
  ``Authorization`` by default; the spec neither serves them from nor stores them.
- ``proxy_cache_valid 200 60s; proxy_cache_valid 404 30s`` = ``--cache-valid 200=60,404=30``,
  ``proxy_cache_use_stale error http_500`` = ``--cache-use-stale error,http_500``,
  ``proxy_cache_lock on`` (the spec's default), ``--cache-no-store '$http_x_nostore'``,
  ``proxy_cache_revalidate on`` = ``--cache-revalidate``.
- ``proxy_http_version 1.1``: with nginx's default HTTP/1.0 to the upstream, gunicorn sends a
  streamed body close-delimited, so a body the app broke off (``raise_at``) looks complete to
  nginx and *is stored truncated*; over HTTP/1.1 it is chunked, the missing last chunk shows,
  and nginx stores nothing, as the spec requires of ferrocorn (which sees the app fail).
- For a method nginx does not cache (POST) ``$upstream_cache_status`` is empty and
  ``add_header ... always`` sends no header at all: read as BYPASS.

Cases excluded from the live comparison (each still checked against its own expectation):

- ``head_first``: nginx's ``proxy_cache_convert_head on`` (default) sends a HEAD miss upstream as
  a GET and stores it, so a later GET is a HIT; the spec says a HEAD miss is not stored (MISS,
  two app calls). With ``convert_head off`` nginx would store the bodiless HEAD answer under the
  GET key, which is worse; no nginx setting matches the spec.
- ``past_expires_then_max_age`` and ``no_cache_then_xae``: order-dependent header handling that
  nginx changed in 1.23.0 (before it, a past ``Expires`` or a ``Cache-Control: no-cache`` seen
  *before* a later ``max-age``/``X-Accel-Expires`` made the response uncacheable for good; since
  1.23.0 the later header wins, as the spec and crates/cache do). Compared live only against
  nginx >= 1.23; the nginx-side table expects the installed version's behaviour.

Not compared at all (no nginx equivalent, or not observable in serial requests): PURGE
(nginx's is commercial), the cache lock, hit-for-miss, stale-while-updating and background
update, eviction, ``--cache-inactive``: tests/test_cache.py covers them.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from apps.cache_backend import calls
from conftest import ServerFactory, ServerError
from nginx_proc import NginxProcess

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
APP = "cache_backend:app"
LATE_SLEEP = 2.3  # > 2 s: every max-age=1 entry stored before it is stale, whatever the sub-second phase
FERROCORN_CACHE_ARGS = [
    "--cache",
    "--cache-valid",
    "200=60,404=30",
    "--cache-use-stale",
    "error,http_500",
    "--cache-bypass",
    "$http_x_nocache $cookie_nocache $arg_nocache",
    "--cache-no-store",
    "$http_x_nostore",
    "--cache-revalidate",
]
NO_HEADER = "(none)"


# -- the table ------------------------------------------------------------------------------------


@dataclass
class Step:
    method: str = "GET"
    headers: dict = field(default_factory=dict)
    late: bool = False  # after the shared sleep
    query: list | None = None  # replaces the case's query for this step


def G(**headers):
    return Step("GET", {k.replace("_", "-"): v for k, v in headers.items()})


def LATE(**headers):
    return Step("GET", {k.replace("_", "-"): v for k, v in headers.items()}, late=True)


@dataclass
class Case:
    id: str
    query: list  # [(name, value)] in order: the app emits headers in this order
    steps: list
    expect: list  # X-Cache-Status per step: nginx's and the spec's
    app_calls: int  # app calls after all steps
    # nginx before 1.23 differs: (its statuses, its app calls)
    nginx_pre_1_23: tuple | None = None
    # the spec departs from nginx on purpose: (statuses, app calls) expected of ferrocorn
    spec: tuple | None = None
    # excluded from the ferrocorn checks (ambiguous spec point), nginx side only
    nginx_only: str = ""

    def target(self, step: Step) -> str:
        q = self.query if step.query is None else step.query
        return f"/diff/{self.id}" + ("?" + urlencode(q) if q else "")


TWO = [G(), G()]
MISS2 = ["MISS", "MISS"]
HIT2 = ["MISS", "HIT"]
EN, FR = {"Accept-Language": "en"}, {"Accept-Language": "fr"}
AUTH = {"Authorization": "Basic dXNlcjpwYXNz"}

CASES = [
    # Cache-Control
    Case("cc_max_age", [("cc", "max-age=60")], TWO, HIT2, 1),
    Case("cc_s_maxage_wins_over_max_age_0", [("cc", "s-maxage=60, max-age=0")], TWO, HIT2, 1),
    Case("cc_max_age_0", [("cc", "max-age=0")], TWO, MISS2, 2),
    Case("cc_s_maxage_0_wins_over_max_age", [("cc", "max-age=60, s-maxage=0")], TWO, MISS2, 2),
    Case("cc_no_store", [("cc", "no-store, max-age=60")], TWO, MISS2, 2),
    Case("cc_no_cache", [("cc", "no-cache, max-age=60")], TWO, MISS2, 2),
    Case("cc_private", [("cc", "private, max-age=60")], TWO, MISS2, 2),
    Case("cc_public_falls_back_to_valid", [("cc", "public")], TWO, HIT2, 1),
    Case("cc_malformed_max_age", [("cc", "max-age=ten")], TWO, MISS2, 2),
    Case("cc_upper_case", [("cc", "Max-Age=60")], TWO, HIT2, 1),
    # Expires
    Case("expires_future", [("expires", "+60")], TWO, HIT2, 1),
    Case("expires_past", [("expires", "-60")], TWO, MISS2, 2),
    Case("expires_not_a_date", [("expires", "0")], TWO, MISS2, 2),
    Case("max_age_then_past_expires", [("cc", "max-age=60"), ("expires", "-60")], TWO, HIT2, 1),
    Case(
        "past_expires_then_max_age",
        [("expires", "-60"), ("cc", "max-age=60")],
        TWO,
        HIT2,
        1,
        nginx_pre_1_23=(MISS2, 2),
    ),
    # X-Accel-Expires
    Case("xae", [("xae", "60")], TWO, HIT2, 1),
    Case("xae_0_wins_over_max_age", [("xae", "0"), ("cc", "max-age=60")], TWO, MISS2, 2),
    Case("xae_then_no_cache", [("xae", "60"), ("cc", "no-cache")], TWO, HIT2, 1),
    Case("no_cache_then_xae", [("cc", "no-cache"), ("xae", "60")], TWO, HIT2, 1, nginx_pre_1_23=(MISS2, 2)),
    Case("xae_absolute", [("xae", "@+60")], TWO, HIT2, 1),
    Case("xae_absolute_in_the_past", [("xae", "@-60")], TWO, ["MISS", "EXPIRED"], 2),
    Case("xae_unparsable_ignored", [("xae", "soon")], TWO, HIT2, 1),
    # refusals
    Case("set_cookie", [("cookie", "1"), ("cc", "max-age=60")], TWO, MISS2, 2),
    Case("vary_star", [("vary", "*"), ("cc", "max-age=60")], TWO, MISS2, 2),
    # --cache-valid
    Case("valid_200", [], TWO, HIT2, 1),
    Case("valid_404", [("status", "404")], TWO, HIT2, 1),
    Case("valid_none_for_500", [("status", "500")], TWO, MISS2, 2),
    Case("max_age_on_500", [("status", "500"), ("cc", "max-age=60")], TWO, HIT2, 1),
    # expiry (the late steps come after LATE_SLEEP)
    Case("max_age_1_expires", [("cc", "max-age=1")], [G(), G(), LATE(), LATE()], ["MISS", "HIT", "EXPIRED", "HIT"], 2),
    Case("xae_1_expires", [("xae", "1")], [G(), G(), LATE()], ["MISS", "HIT", "EXPIRED"], 2),
    Case("expires_plus_1_expires", [("expires", "+1")], [G(), G(), LATE()], ["MISS", "HIT", "EXPIRED"], 2),
    Case("max_age_60_still_fresh", [("cc", "max-age=60")], [G(), LATE()], HIT2, 1),
    # --cache-revalidate / proxy_cache_revalidate: the refresh asks If-None-Match, the app's 304
    # renews the copy (for the 304's own max-age), a changed ETag replaces it.
    Case(
        "revalidate_304_renews",
        [("cc", "max-age=1"), ("etag", "v1"), ("cc304", "max-age=60")],
        [G(), LATE(), LATE()],
        ["MISS", "REVALIDATED", "HIT"],
        2,
    ),
    Case(
        "revalidate_changed_etag_replaces",
        [("cc", "max-age=1"), ("etag", "v1")],
        [G(), LATE(X_Backend="etag=v2"), LATE()],
        ["MISS", "EXPIRED", "HIT"],
        2,
    ),
    # stale on a failed refresh (--cache-use-stale error,http_500); the failure is asked for by a
    # request header, so the key is the same
    Case(
        "stale_on_app_error",
        [("cc", "max-age=1")],
        [G(), LATE(X_Backend="raise=1"), LATE(), LATE()],
        ["MISS", "STALE", "EXPIRED", "HIT"],
        3,
    ),
    Case(
        "stale_on_http_500",
        [("cc", "max-age=1")],
        [G(), LATE(X_Backend="status=500"), LATE()],
        ["MISS", "STALE", "EXPIRED"],
        3,
    ),
    Case(
        "refresh_not_storable",
        [("cc", "max-age=1")],
        [G(), LATE(X_Backend="cc=no-store"), LATE()],
        ["MISS", "EXPIRED", "EXPIRED"],
        3,
    ),
    # methods
    Case(
        "post_bypasses_and_is_not_stored",
        [("cc", "max-age=60")],
        [Step("POST"), Step("POST"), G(), G(), Step("POST")],
        ["BYPASS", "BYPASS", "MISS", "HIT", "BYPASS"],
        4,
    ),
    Case("head_after_get", [("cc", "max-age=60")], [G(), Step("HEAD"), G()], ["MISS", "HIT", "HIT"], 1),
    Case(
        "head_first",
        [("cc", "max-age=60")],
        [Step("HEAD"), G(), G()],
        ["MISS", "HIT", "HIT"],
        1,
        spec=(["MISS", "MISS", "HIT"], 2),
    ),
    # bypass conditions (the bypassed response is still stored, as proxy_cache_bypass)
    Case("bypass_header_still_stores", [("cc", "max-age=60")], [G(X_Nocache="1"), G()], ["BYPASS", "HIT"], 1),
    Case("bypass_header_0_is_no_bypass", [("cc", "max-age=60")], [G(X_Nocache="0"), G(X_Nocache="0")], HIT2, 1),
    Case(
        "bypass_refreshes_a_stored_entry",
        [("cc", "max-age=60")],
        [G(), G(X_Nocache="yes"), G()],
        ["MISS", "BYPASS", "HIT"],
        2,
    ),
    Case(
        "no_store_condition",
        [("cc", "max-age=60")],
        [G(X_Nostore="1"), G(), G(), G(X_Nostore="1")],
        ["MISS", "MISS", "HIT", "HIT"],
        2,
    ),
    Case(
        "bypass_cookie",
        [("cc", "max-age=60")],
        [G(Cookie="nocache=1"), G(Cookie="nocache=1"), G()],
        ["BYPASS", "BYPASS", "HIT"],
        2,
    ),
    Case("bypass_arg", [("cc", "max-age=60"), ("nocache", "1")], TWO, ["BYPASS", "BYPASS"], 2),
    Case(
        "bypass_arg_stores_under_its_own_key",
        [("cc", "max-age=60"), ("nocache", "1")],
        [G(), Step("GET", query=[("cc", "max-age=60")]), Step("GET", query=[("cc", "max-age=60")])],
        ["BYPASS", "MISS", "HIT"],
        2,
    ),
    # Authorization: neither served from the cache nor stored
    Case(
        "authorization",
        [("cc", "max-age=60")],
        [Step("GET", AUTH), Step("GET", AUTH), G(), G()],
        ["BYPASS", "BYPASS", "MISS", "HIT"],
        3,
    ),
    Case("authorization_not_served_a_stored_entry", [("cc", "max-age=60")], [G(), Step("GET", AUTH), G()],
         ["MISS", "BYPASS", "HIT"], 2),
    # bodies: a streamed body is stored whole; one that broke off (the app raised in the middle)
    # is not stored at all
    Case("streamed_body", [("stream", "1"), ("chunks", "5"), ("size", "10000"), ("cc", "max-age=60")], TWO, HIT2, 1),
    Case(
        "body_broken_off_not_stored",
        [("stream", "1"), ("chunks", "4"), ("size", "8000"), ("cc", "max-age=60")],
        [G(X_Backend="raise_at=2"), G(), G()],
        ["MISS", "MISS", "HIT"],
        2,
    ),
    # Vary
    Case(
        "vary_variants",
        [("vary", "Accept-Language"), ("cc", "max-age=60")],
        [Step("GET", EN), Step("GET", EN), Step("GET", FR), Step("GET", FR), Step("GET", EN)],
        ["MISS", "HIT", "MISS", "HIT", "HIT"],
        2,
    ),
    Case(
        "vary_header_absent_then_present",
        [("vary", "Accept-Language"), ("cc", "max-age=60")],
        [G(), Step("GET", EN), G()],
        ["MISS", "MISS", "HIT"],
        2,
    ),
    Case("vary_header_absent_both_times", [("vary", "Accept-Language"), ("cc", "max-age=60")], TWO, HIT2, 1),
]


def nginx_version():
    try:
        out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stderr + out.stdout
    marker = "nginx/"
    if marker not in text:
        return None
    ver = text.split(marker, 1)[1].split()[0]
    return tuple(int(x) for x in ver.split(".")[:3] if x.isdigit())


def wholeness_ok(case: Case, codes) -> bool:
    """Every answer whole, but for the steps whose app breaks off mid-body."""
    want = ["cut" if "raise_at" in step.headers.get("X-Backend", "") else "whole" for step in case.steps]
    return [w for _, w in codes] == want


def nginx_expectation(case: Case, version) -> tuple[list, int]:
    if case.nginx_pre_1_23 and version < (1, 23):
        return case.nginx_pre_1_23
    return case.expect, case.app_calls


def ferrocorn_expectation(case: Case) -> tuple[list, int]:
    return case.spec or (case.expect, case.app_calls)


def compared_live(case: Case, version) -> bool:
    return not case.nginx_only and case.spec is None and not (case.nginx_pre_1_23 and version < (1, 23))


# -- running a table through a server -------------------------------------------------------------


def status_of(resp, *, nginx: bool) -> str:
    value = resp.headers.get("X-Cache-Status")
    if value is None or value == "":
        return "BYPASS" if nginx else NO_HEADER
    return value


def run_table(base_url: str, counts_dir: Path, *, nginx: bool, cases=CASES):
    """Run every case; return {case id: (statuses, app calls, [(status code, body length)])}."""
    got = {c.id: [] for c in cases}
    codes = {c.id: [] for c in cases}

    def do(case, step):
        url = base_url + case.target(step)
        data = b"x" if step.method == "POST" else None
        try:
            r = requests.request(step.method, url, headers=step.headers, timeout=15, data=data, stream=True)
        except requests.RequestException as e:
            got[case.id].append(f"error:{type(e).__name__}")
            codes[case.id].append((None, "no answer"))
            return
        got[case.id].append(status_of(r, nginx=nginx))
        try:
            body = r.content
            whole = step.method == "HEAD" or body.endswith(b"END\n")
        except requests.RequestException:
            whole = False  # the body broke off
        finally:
            r.close()
        codes[case.id].append((r.status_code, "whole" if whole else "cut"))

    for case in cases:
        for step in case.steps:
            if not step.late:
                do(case, step)
    if any(s.late for c in cases for s in c.steps):
        time.sleep(LATE_SLEEP)
        for case in cases:
            for step in case.steps:
                if step.late:
                    do(case, step)
    out = {}
    for case in cases:
        n = calls(counts_dir, path=f"/diff/{case.id}")
        out[case.id] = (got[case.id], n, codes[case.id])
    return out


def table(rows, headings) -> str:
    widths = [max(len(str(r[i])) for r in [headings] + rows) for i in range(len(headings))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headings), line(["-" * w for w in widths])] + [line(r) for r in rows])


def fmt(seq) -> str:
    return " ".join(seq)


def codes_text(codes) -> str:
    return " ".join(f"{c}{'' if w == 'whole' else '/' + w}" for c, w in codes)


# -- nginx ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format cache '$request_method $request_uri $status $upstream_cache_status';
    access_log {prefix}/access.log cache;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    proxy_cache_path {prefix}/cache keys_zone=z:10m levels=1:2 inactive=600s max_size=256m use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_cache z;
            proxy_cache_key $scheme$host$request_uri;
            proxy_cache_valid 200 60s;
            proxy_cache_valid 404 30s;
            proxy_cache_lock on;
            proxy_cache_use_stale error http_500;
            proxy_cache_revalidate on;
            proxy_cache_bypass $http_x_nocache $cookie_nocache $arg_nocache $http_authorization;
            proxy_no_cache $http_authorization $http_x_nostore;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


class Nginx(NginxProcess):
    """nginx with ``proxy_cache`` in front of the backend on ``backend_port``."""

    def __init__(self, backend_port: int):
        super().__init__(
            NGINX, NGINX_CONF, name="ferrocorn-nginx", dirs=("tmp", "cache"), backend=backend_port
        )


def gunicorn_available() -> bool:
    return importlib.util.find_spec("gunicorn") is not None


@pytest.fixture(scope="module")
def nginx_run(tmp_path_factory):
    """nginx in front of the backend, the whole table run once: (results, nginx version)."""
    version = nginx_version()
    if not (os.access(NGINX, os.X_OK) and version):
        pytest.skip(f"nginx not found at {NGINX} (Debian: apt-get install nginx-light; or set NGINX=path)")
    counts = tmp_path_factory.mktemp("nginx-counts")
    factory = ServerFactory()
    nginx = None
    try:
        env = {"CACHE_BACKEND_COUNTS": str(counts)}
        if gunicorn_available():
            backend = factory(APP, "-w", "2", "-k", "gthread", "--threads", "8", env=env,
                              cmd=[sys.executable, "-m", "gunicorn"])
        else:
            backend = factory(APP, "-w", "2", env=env)
        nginx = Nginx(backend.port)
        results = run_table(nginx.url, counts, nginx=True)
        yield results, version, nginx.logs
    finally:
        if nginx is not None:
            nginx.stop()
        factory.stop_all()


@pytest.fixture(scope="module")
def ferrocorn_run(tmp_path_factory):
    counts = tmp_path_factory.mktemp("ferrocorn-counts")
    factory = ServerFactory()
    try:
        try:
            srv = factory(APP, "-w", "2", *FERROCORN_CACHE_ARGS, env={"CACHE_BACKEND_COUNTS": str(counts)})
        except ServerError as e:
            pytest.fail(f"ferrocorn with --cache did not start:\n{e}")
        results = run_table(srv.url, counts, nginx=False)
        yield results, srv
    finally:
        factory.stop_all()


def _report(title, rows, headings):
    return f"{title}\n" + table(rows, headings)


# -- the tests ------------------------------------------------------------------------------------


def test_nginx_side_matches_expected_table(nginx_run):
    results, version, logs = nginx_run
    rows, bad = [], []
    for case in CASES:
        seq, n, codes = results[case.id]
        want_seq, want_n = nginx_expectation(case, version)
        ok = seq == want_seq and n == want_n and wholeness_ok(case, codes)
        rows.append([case.id, fmt(want_seq), want_n, fmt(seq), n, codes_text(codes), "" if ok else "<-- differs"])
        if not ok:
            bad.append(case.id)
    vtext = ".".join(map(str, version))
    assert not bad, _report(
        f"nginx {vtext} differs from the expected table in {bad}:",
        rows,
        ["case", "expected", "calls", "nginx", "calls", "answers", ""],
    ) + "\n" + logs()


def test_ferrocorn_side_matches_expected_table(ferrocorn_run):
    results, srv = ferrocorn_run
    rows, bad = [], []
    for case in CASES:
        if case.nginx_only:
            continue
        seq, n, codes = results[case.id]
        want_seq, want_n = ferrocorn_expectation(case)
        ok = seq == want_seq and n == want_n and wholeness_ok(case, codes)
        rows.append([case.id, fmt(want_seq), want_n, fmt(seq), n, codes_text(codes), "" if ok else "<-- differs"])
        if not ok:
            bad.append(case.id)
    assert not bad, _report(
        f"ferrocorn --cache differs from the expected table in {bad}:",
        rows,
        ["case", "expected", "calls", "ferrocorn", "calls", "answers", ""],
    ) + "\n" + srv.stderr_text()[-3000:]


def test_ferrocorn_matches_nginx_live(nginx_run, ferrocorn_run):
    n_results, version, _ = nginx_run
    f_results, _ = ferrocorn_run
    rows, bad = [], []
    for case in CASES:
        if not compared_live(case, version):
            continue
        n_seq, n_calls, n_codes = n_results[case.id]
        f_seq, f_calls, f_codes = f_results[case.id]
        # the same statuses, the same app calls, and the same answer codes on the wire
        ok = n_seq == f_seq and n_calls == f_calls and n_codes == f_codes
        rows.append([case.id, fmt(n_seq), n_calls, codes_text(n_codes), fmt(f_seq), f_calls, codes_text(f_codes),
                     "" if ok else "<-- differs"])
        if not ok:
            bad.append(case.id)
    assert not bad, _report(
        f"ferrocorn --cache and nginx differ in {bad}:",
        rows,
        ["case", "nginx", "calls", "answers", "ferrocorn", "calls", "answers", ""],
    )
