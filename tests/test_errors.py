"""Application errors, import failures and bad option values."""

import re
import subprocess

import pytest
import requests

from conftest import APPS_DIR, ferrocorn_cmd
from wire import Conn, exchange, parse_responses, request_bytes


@pytest.fixture(scope="module")
def feat(module_server):
    return module_server("features:app")


@pytest.mark.parametrize("route", ["/crash_before", "/crash_iter"])
def test_app_exception_is_500_and_logged(feat, route):
    data, closed = exchange(feat.port, request_bytes("GET", route))
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [500], data[:300]
    r = resps[0]
    assert b"SECRET_TRACEBACK_MARKER" not in r.body and b"Traceback" not in r.body
    assert closed, "connection should be closed after a 500 for a crashed app"
    feat.wait_log(r"Traceback \(most recent call last\)")
    feat.wait_log(r"RuntimeError: boom-" + ("before" if route == "/crash_before" else "in-iterable"))
    # the server keeps serving on a fresh connection
    assert requests.get(feat.url + "/still-alive", timeout=5).text == "hello /still-alive"


def test_traceback_goes_to_error_logfile(server, tmp_path):
    log = tmp_path / "error.log"
    srv = server("features:app", "--error-logfile", str(log), log_path=log)
    r = requests.get(srv.url + "/crash_before", timeout=5)
    assert r.status_code == 500 and "SECRET_TRACEBACK_MARKER" not in r.text
    srv.wait_log(r"RuntimeError: boom-before-start-response", source=srv.log_text)
    assert "Traceback (most recent call last)" in srv.log_text()


def test_exception_after_headers_closes_connection(feat):
    data, closed = exchange(feat.port, request_bytes("GET", "/crash_after_headers"))
    assert closed
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    tail = data.split(b"first-chunk;", 1)[1]
    assert not tail.endswith(b"0\r\n\r\n"), "response after a mid-stream crash must be truncated"
    feat.wait_log(r"RuntimeError: boom-after-headers")
    assert requests.get(feat.url + "/alive-2", timeout=5).text == "hello /alive-2"


def test_exception_after_headers_with_content_length_truncates(feat):
    data, closed = exchange(feat.port, request_bytes("GET", "/crash_after_headers_cl"))
    resps, _ = parse_responses(data)
    assert closed
    assert resps[0].status == 200 and resps[0].body == b"first-chunk;"
    assert not resps[0].complete  # fewer than the 100 announced bytes


@pytest.mark.parametrize("kind", ["crlf", "bytes", "name"])
def test_invalid_response_header_is_500(feat, kind):
    data, _ = exchange(feat.port, request_bytes("GET", f"/bad_header?kind={kind}"))
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [500], data[:300]
    assert b"Injected" not in data and b"should not be sent" not in data


def test_non_str_status_is_500(feat):
    resps, _ = parse_responses(exchange(feat.port, request_bytes("GET", "/bad_status"))[0])
    assert [r.status for r in resps] == [500]


def test_missing_start_response_is_500(feat):
    data, _ = exchange(feat.port, request_bytes("GET", "/no_start_response"))
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [500], data[:300]
    assert b"forgot start_response" not in data


def test_many_crashes_do_not_kill_server(feat):
    for _ in range(10):
        r = requests.get(feat.url + "/crash_before", timeout=5)
        assert r.status_code == 500
    assert requests.get(feat.url + "/fine", timeout=5).text == "hello /fine"


def test_crash_on_keepalive_connection_then_new_connection(feat):
    with Conn(feat.port) as c:
        c.send(request_bytes("GET", "/ok1"))
        assert c.read_response().status == 200
        c.send(request_bytes("GET", "/crash_before"))
        assert c.read_response().status == 500
    assert requests.get(feat.url + "/ok2", timeout=5).status_code == 200


# --- startup failures -------------------------------------------------------------------------------
def test_missing_module_exits_4(server):
    srv = server("no_such_module_xyz:app", expect_fail=True)
    assert srv.returncode == 4, srv.stderr_text()
    err = srv.stderr_text()
    assert "no_such_module_xyz" in err
    assert "ModuleNotFoundError" in err or "No module named" in err


def test_broken_import_exits_4(server):
    srv = server("broken_import:app", expect_fail=True)
    assert srv.returncode == 4, srv.stderr_text()
    err = srv.stderr_text()
    assert "this_module_does_not_exist_ferrocorn" in err


def test_missing_attribute_exits_4(server):
    srv = server("echo:no_such_callable", expect_fail=True)
    assert srv.returncode == 4, srv.stderr_text()
    assert "no_such_callable" in srv.stderr_text()


def test_missing_default_application_exits_4(server):
    srv = server("factory", expect_fail=True)  # module without `application`
    assert srv.returncode == 4, srv.stderr_text()
    assert "application" in srv.stderr_text()


@pytest.mark.parametrize(
    "args, setting",
    [
        (["--keep-alive", "abc"], r"keep.?alive"),
        (["--limit-request-line", "lots"], r"limit.request.line"),
        (["--backlog", "-"], r"backlog"),
        (["--header-map", "sometimes"], r"header.map"),
        (["--proxy-protocol=v9"], r"proxy.protocol"),
        (["-b", "127.0.0.1:notaport"], r"bind|notaport|port"),
    ],
    ids=["keep-alive", "limit-request-line", "backlog", "header-map", "proxy-protocol", "bind"],
)
def test_bad_option_value_names_setting(args, setting):
    r = subprocess.run(
        ferrocorn_cmd() + args + ["default_app"],
        cwd=str(APPS_DIR),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert r.returncode != 0, r.stderr
    assert re.search(setting, r.stderr, re.I), r.stderr
