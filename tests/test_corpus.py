"""Gunicorn's request corpus (tests/requests/{valid,invalid}) replayed against ferrocorn over sockets.

The corpus is fetched at test time from the gunicorn sdist on PyPI into tests/.corpus (git-ignored,
never committed), decoded per gunicorn's treq.py rules, grouped by non-default config, and every case
is sent to an echo app twice: all at once and in seeded random chunks. Run alone with ``-m corpus``.

Valid cases: exactly len(expected) 200 responses in order whose echoed environ matches.
Invalid cases: the status from gunicorn's error table (or a close with no response for
NoMoreData), and the app is never called. Disagreements must be listed in corpus_divergences.md.
"""

from __future__ import annotations

import base64
import importlib.machinery
import os
import random
import re
import sys
import types
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import TESTS_DIR, ServerFactory
from gunicorn_corpus import GUNICORN_VERSION, corpus_root, decode_http
from wire import exchange, parse_responses

pytestmark = pytest.mark.corpus

DIVERGENCES_FILE = TESTS_DIR / "corpus_divergences.md"
SEED = int(os.environ.get("FERROCORN_CORPUS_SEED", "20260611"))
MIN_AGREEMENT = 0.95
EXCHANGE_TIMEOUT = 3.0

ERROR_STATUS = {
    "InvalidRequestLine": 400,
    "InvalidRequestMethod": 400,
    "InvalidHTTPVersion": 400,
    "InvalidHeader": 400,
    "InvalidHeaderName": 400,
    "ObsoleteFolding": 400,
    "InvalidProxyLine": 400,
    "InvalidProxyHeader": 400,
    "InvalidSchemeHeaders": 400,
    "InvalidChunkSize": 400,
    "ChunkMissingTerminator": 400,
    "InvalidChunkExtension": 400,
    "LimitRequestLine": 414,
    "LimitRequestHeaders": 431,
    "ForbiddenProxyRequest": 403,
    "ExpectationFailed": 417,
    "UnsupportedTransferCoding": 501,
    "NoMoreData": None,  # client EOF mid-request: close without a response
}

# gunicorn setting -> ferrocorn flag (value None = boolean flag)
FLAG_FOR_SETTING = {
    "limit_request_line": "--limit-request-line",
    "limit_request_fields": "--limit-request-fields",
    "limit_request_field_size": "--limit-request-field_size",
    "header_map": "--header-map",
    "permit_obsolete_folding": "--permit-obsolete-folding",
    "strip_header_spaces": "--strip-header-spaces",
    "permit_unconventional_http_method": "--permit-unconventional-http-method",
    "permit_unconventional_http_version": "--permit-unconventional-http-version",
    "casefold_http_method": "--casefold-http-method",
    "proxy_protocol": "--proxy-protocol",
    "forwarded_allow_ips": "--forwarded-allow-ips",
}


# --- obtaining and decoding the corpus ------------------------------------------------------------
def split_request_uri(target: str):
    if target.startswith("//"):
        parts = urllib.parse.urlsplit("." + target)
        return parts._replace(path=parts.path[1:])
    return urllib.parse.urlsplit(target)


def uri(raw: str) -> dict:
    parts = split_request_uri(raw)
    return {
        "raw": raw,
        "scheme": parts.scheme or "",
        "host": parts.netloc.rsplit(":", 1)[0] or None,
        "port": parts.port or 80,
        "path": parts.path or "",
        "query": parts.query or "",
        "fragment": parts.fragment or "",
    }


class _ShimConfig:
    """Stands in for gunicorn.config.Config: records non-default settings."""

    def __init__(self):
        self.settings = {}

    def set(self, name, value):
        self.settings[name] = value


def _shim_modules():
    gunicorn = types.ModuleType("gunicorn")
    config = types.ModuleType("gunicorn.config")
    config.Config = _ShimConfig
    http = types.ModuleType("gunicorn.http")
    errors = types.ModuleType("gunicorn.http.errors")
    for name in ERROR_STATUS:
        setattr(errors, name, type(name, (Exception,), {}))

    def missing(name):  # any other error class the corpus may name
        cls = type(name, (Exception,), {})
        setattr(errors, name, cls)
        return cls

    errors.__getattr__ = missing
    gunicorn.config, gunicorn.http, http.errors = config, http, errors
    return {"gunicorn": gunicorn, "gunicorn.config": config, "gunicorn.http": http, "gunicorn.http.errors": errors}


def load_expectation(py_path: Path) -> dict:
    shims = _shim_modules()
    saved = {k: sys.modules.get(k) for k in shims}
    sys.modules.update(shims)
    try:
        mod = types.ModuleType("__corpus_case__")
        mod.uri = uri
        mod.cfg = _ShimConfig()
        importlib.machinery.SourceFileLoader("__corpus_case__", str(py_path)).exec_module(mod)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return vars(mod)


@dataclass
class Case:
    id: str
    kind: str  # "valid" | "invalid"
    data: bytes
    expect: object  # list of request dicts, or an exception class name
    settings: dict
    flags: tuple = field(default_factory=tuple)


def flags_for(settings: dict) -> tuple:
    args = []
    for name, value in sorted(settings.items()):
        flag = FLAG_FOR_SETTING.get(name)
        if flag is None:
            raise KeyError(f"no ferrocorn flag mapped for gunicorn setting {name!r}")
        if name == "proxy_protocol":
            args += [flag, "auto" if value is True else str(value)]
        elif isinstance(value, bool):
            if value:
                args.append(flag)
        else:
            args += [flag, str(value)]
    return tuple(args)


def load_cases() -> list[Case]:
    root = corpus_root()
    cases = []
    for kind in ("valid", "invalid"):
        for http_path in sorted((root / kind).glob("*.http")):
            ns = load_expectation(http_path.with_suffix(".py"))
            cfg = ns.get("cfg")
            settings = dict(cfg.settings) if isinstance(cfg, _ShimConfig) else {}
            expect = ns["request"]
            if kind == "valid":
                expect = expect if isinstance(expect, list) else [expect]
            else:
                expect = expect.__name__
            cases.append(
                Case(
                    id=f"{kind}/{http_path.stem}",
                    kind=kind,
                    data=decode_http(http_path.read_bytes()),
                    expect=expect,
                    settings=settings,
                    flags=flags_for(settings),
                )
            )
    return cases


try:
    CASES = load_cases()
    LOAD_ERROR = None
except Exception as e:  # reported by the tests below instead of a collection error
    CASES = []
    LOAD_ERROR = e


# --- expectations ---------------------------------------------------------------------------------
def expected_environ(req: dict) -> dict:
    env = {
        "REQUEST_METHOD": req["method"],
        "RAW_URI": req["uri"]["raw"],
        "PATH_INFO": urllib.parse.unquote_to_bytes(req["uri"]["path"]).decode("latin-1"),
        "QUERY_STRING": req["uri"]["query"],
        "SERVER_PROTOCOL": "HTTP/%d.%d" % tuple(req["version"]),
    }
    joined: dict[str, list[str]] = {}
    for name, value in req["headers"]:
        if name == "CONTENT-TYPE":
            env["CONTENT_TYPE"] = value
        elif name == "CONTENT-LENGTH":
            env["CONTENT_LENGTH"] = value
        else:
            joined.setdefault("HTTP_" + name.replace("-", "_"), []).append(value)
    for key, values in joined.items():
        env[key] = ",".join(values)
    return env


def compare_valid(case: Case, resps, closed, calls) -> str | None:
    n = len(case.expect)
    statuses = [r.status for r in resps]
    if statuses != [200] * n:
        return f"expected {n} x 200, got statuses {statuses}"
    if calls != n:
        return f"app called {calls} times, expected {n}"
    for i, (req, resp) in enumerate(zip(case.expect, resps)):
        try:
            got = resp.json()
        except ValueError:
            return f"response {i}: body is not the echo JSON: {resp.body[:120]!r}"
        want = expected_environ(req)
        for key, value in want.items():
            if got.get(key) != value:
                return f"response {i}: {key} = {got.get(key)!r}, expected {value!r}"
        extra = sorted(
            k for k in got if (k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")) and k not in want
        )
        if extra:
            return f"response {i}: unexpected environ keys {extra}"
        body = base64.b64decode(got["_body_b64"])
        want_body = req["body"].encode("latin-1") if isinstance(req["body"], str) else req["body"]
        if body != want_body:
            return f"response {i}: body {body[:80]!r}... ({len(body)} bytes), expected {len(want_body)} bytes"
    return None


def compare_invalid(case: Case, resps, closed, calls) -> str | None:
    status = ERROR_STATUS.get(case.expect, 400)
    statuses = [r.status for r in resps]
    if calls:
        return f"invalid request reached the app ({calls} calls); statuses {statuses}"
    if status is None:
        if statuses:
            return f"expected close without response ({case.expect}), got statuses {statuses}"
    elif statuses != [status]:
        return f"expected one {status} ({case.expect}), got statuses {statuses}"
    if not closed:
        return "connection not closed by the server"
    return None


# --- running --------------------------------------------------------------------------------------
def _calls(state_dir: Path) -> int:
    f = state_dir / "calls.log"
    return len(f.read_text().splitlines()) if f.exists() else 0


def run_case(case: Case, port: int, state_dir: Path) -> dict:
    """Send the case whole and in seeded random chunks. Returns {mode: failure reason or None}."""
    results = {}
    rng = random.Random(f"{SEED}:{case.id}")
    for mode in ("whole", "chunked"):
        before = _calls(state_dir)
        if mode == "whole":
            data, closed = exchange(port, case.data, timeout=EXCHANGE_TIMEOUT)
        else:
            data, closed = exchange(
                port, case.data, rng=rng, max_chunk=max(1, len(case.data) // 10), pause=0.001, timeout=EXCHANGE_TIMEOUT
            )
        calls = _calls(state_dir) - before
        try:
            resps, _ = parse_responses(data)
        except ValueError as e:
            results[mode] = f"unparseable response bytes ({e}): {data[:120]!r}"
            continue
        compare = compare_valid if case.kind == "valid" else compare_invalid
        results[mode] = compare(case, resps, closed, calls)
    return results


def load_divergences() -> dict[str, str]:
    listed = {}
    if not DIVERGENCES_FILE.exists():
        return listed
    rx = re.compile(r"^\s*[-*]\s*`?((?:valid|invalid)/[\w.\-]+)`?\s*[:\u2014]\s*(\S.*)$")
    for line in DIVERGENCES_FILE.read_text().splitlines():
        m = rx.match(line)
        if m:
            listed[m.group(1)] = m.group(2).strip()
    return listed


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    if LOAD_ERROR is not None:
        pytest.fail(f"could not obtain/load the gunicorn {GUNICORN_VERSION} corpus: {LOAD_ERROR!r}")
    print(f"\ncorpus seed: {SEED} (set FERROCORN_CORPUS_SEED to change)")
    groups: dict[tuple, list[Case]] = {}
    for case in CASES:
        groups.setdefault(case.flags, []).append(case)
    results: dict[str, str | None] = {}
    for flags, cases in groups.items():
        state_dir = tmp_path_factory.mktemp("corpus-state")
        factory = ServerFactory()
        try:
            try:
                # Gunicorn serves HTTP/1.1 requests without Host (a third of the valid corpus);
                # ferrocorn refuses them by default (RFC 9112 §3.2), and --no-require-host is
                # its Gunicorn-compatible mode. tests/test_smuggling.py checks the default.
                srv = factory("echo:app", "--no-require-host", *flags, env={"STATE_DIR": str(state_dir)})
            except AssertionError as e:
                for case in cases:
                    results[case.id] = f"server did not start with {list(flags)}: {str(e).splitlines()[0]}"
                continue
            for case in cases:
                per_mode = run_case(case, srv.port, state_dir)
                failures = [f"[{m}] {r}" for m, r in per_mode.items() if r]
                results[case.id] = "; ".join(failures) if failures else None
                if srv.proc.poll() is not None:
                    for rest in cases[cases.index(case) + 1 :]:
                        results[rest.id] = "server process died earlier in this group"
                    results[case.id] = (results[case.id] or "") + " (server died)"
                    break
        finally:
            factory.stop_all()
    return results


CASE_IDS = [c.id for c in CASES] or ["corpus-unavailable"]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_corpus_case(corpus_results, case_id):
    reason = corpus_results.get(case_id, "not run")
    listed = load_divergences()
    if case_id in listed:
        if reason is None:
            pytest.fail(f"{case_id} is listed in corpus_divergences.md but now agrees with gunicorn; remove it")
        pytest.xfail(f"listed divergence: {listed[case_id]} (observed: {reason})")
    assert reason is None, f"{case_id}: {reason}"


def test_corpus_agreement_rate(corpus_results):
    total = len(corpus_results)
    agree = sum(1 for r in corpus_results.values() if r is None)
    rate = agree / total if total else 0.0
    print(f"\ncorpus agreement: {agree}/{total} = {rate:.1%} (seed {SEED})")
    for case_id, reason in sorted(corpus_results.items()):
        if reason:
            print(f"  DIVERGES {case_id}: {reason}")
    assert total >= 130, f"corpus too small ({total} cases); extraction problem?"
    assert rate >= MIN_AGREEMENT, f"agreement {rate:.1%} < {MIN_AGREEMENT:.0%}"


def test_every_divergence_is_listed(corpus_results):
    listed = load_divergences()
    unlisted = sorted(cid for cid, r in corpus_results.items() if r and cid not in listed)
    stale = sorted(cid for cid in listed if corpus_results.get(cid, "missing") is None)
    unknown = sorted(cid for cid in listed if cid not in corpus_results)
    msgs = []
    if unlisted:
        msgs.append("unlisted divergences:\n" + "\n".join(f"  {c}: {corpus_results[c]}" for c in unlisted))
    if stale:
        msgs.append("listed but now agreeing (remove from corpus_divergences.md): " + ", ".join(stale))
    if unknown:
        msgs.append("listed ids not in the corpus: " + ", ".join(unknown))
    assert not msgs, "\n".join(msgs)
