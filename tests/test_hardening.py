"""Hardening (issue 19): what a hostile or careless peer could make the server get wrong.

- Response header values are latin-1 on the wire (PEP 3333 native strings, ASGI bytes): one byte
  per character, never UTF-8; a value latin-1 cannot encode is refused with a 500.
- An absolute-form target must start with a valid scheme (RFC 3986): `1http://...` is a 400.
- An HTTP/1.1 request without Host is a 400 (RFC 9112 §3.2) unless `--no-require-host`.

The smuggling matrix is tests/test_smuggling.py.
"""

from pathlib import Path

import pytest

from wire import Conn, exchange, parse_responses, request_bytes

CLASSES = Path(__file__).parent / "apps" / "classes"
LATIN1_LINE = b"\r\nX-Word: caf\xe9 \xff\xa0end\r\n"


@pytest.fixture(scope="module", params=["sync", "gthread", "gevent"])
def wsgi(request, module_server):
    return module_server("features:app", "-k", request.param)


@pytest.fixture(scope="module")
def asgi(module_server):
    return module_server("asgi_app:app", "-k", "asgi", cwd=CLASSES)


def test_wsgi_header_values_go_out_as_latin1(wsgi):
    data, _ = exchange(wsgi.port, request_bytes("GET", "/latin1"))
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert LATIN1_LINE in head, head
    assert b"\xc3" not in head, "sent UTF-8 instead of latin-1"


def test_a_wsgi_header_value_beyond_latin1_is_a_500_and_the_worker_lives(wsgi):
    data, _ = exchange(wsgi.port, request_bytes("GET", "/not_latin1"))
    resps, _ = parse_responses(data)
    assert resps[0].status == 500, data[:300]
    assert b"never sent" not in data and b"\xe2\x82\xac" not in data
    with Conn(wsgi.port) as c:
        c.send(request_bytes("GET", "/after"))
        assert c.read_response().body == b"hello /after"


def test_asgi_header_bytes_go_out_unchanged(asgi):
    data, _ = exchange(asgi.port, request_bytes("GET", "/latin1"))
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert b"\r\nx-word: caf\xe9 \xff\xa0end\r\n" in head, head


@pytest.mark.parametrize("target", [b"1http://127.0.0.1/p", b"ht/tp://h/p", b"://h/p", b"+a://h/p"])
def test_absolute_form_with_an_invalid_scheme_is_refused(wsgi, target):
    data, closed = exchange(wsgi.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [400], data[:300]
    assert closed


def test_absolute_form_with_a_valid_scheme_still_reaches_the_app(wsgi):
    data, _ = exchange(wsgi.port, b"GET http://example.test/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    resps, _ = parse_responses(data)
    assert resps[0].status == 200 and resps[0].body == b"hello /after"


def test_no_require_host_serves_http11_without_host_as_gunicorn_does(module_server):
    srv = module_server("features:app", "--no-require-host")
    data, _ = exchange(srv.port, b"GET /after HTTP/1.1\r\nConnection: close\r\n\r\n")
    resps, _ = parse_responses(data)
    assert resps[0].status == 200 and resps[0].body == b"hello /after"


def test_http11_without_host_is_refused_by_default(wsgi):
    data, closed = exchange(wsgi.port, b"GET /after HTTP/1.1\r\n\r\n", shutdown=False)
    resps, _ = parse_responses(data)
    assert [r.status for r in resps] == [400] and closed
    assert b"Host" in resps[0].body
