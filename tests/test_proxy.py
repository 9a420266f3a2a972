"""Trusted-proxy headers (secure_scheme_headers, forwarded_allow_ips) and the PROXY protocol v1/v2."""

import socket
import struct

import pytest

from wire import Conn, exchange, parse_responses, request_bytes

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def calls(state_dir):
    f = state_dir / "calls.log"
    return f.read_text().splitlines() if f.exists() else []


def one(srv, raw):
    data, closed = exchange(srv.port, raw)
    resps, _ = parse_responses(data)
    assert len(resps) >= 1, data[:300]
    return resps[0], closed


def env_of(srv, raw):
    r, _ = one(srv, raw)
    assert r.status == 200, r
    return r.json()


@pytest.fixture(scope="module")
def trusted(module_server):
    return module_server("echo:app")


# --- secure scheme headers ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "header, value, scheme",
    [
        ("X-Forwarded-Proto", "https", "https"),
        ("X-Forwarded-Proto", "http", "http"),
        ("X-Forwarded-Ssl", "on", "https"),
        ("X-Forwarded-Protocol", "ssl", "https"),
    ],
)
def test_scheme_from_trusted_peer(trusted, header, value, scheme):
    env = env_of(trusted, request_bytes("GET", "/", headers=[(header, value)]))
    assert env["wsgi.url_scheme"] == scheme


def test_no_scheme_header_is_http(trusted):
    assert env_of(trusted, request_bytes("GET", "/"))["wsgi.url_scheme"] == "http"


def test_scheme_header_ignored_from_untrusted_peer(server):
    srv = server("echo:app", "--forwarded-allow-ips", "10.9.9.9")
    env = env_of(srv, request_bytes("GET", "/", headers=[("X-Forwarded-Proto", "https")]))
    assert env["wsgi.url_scheme"] == "http"


def test_forwarded_allow_ips_star(server):
    srv = server("echo:app", "--forwarded-allow-ips", "*")
    env = env_of(srv, request_bytes("GET", "/", headers=[("X-Forwarded-Proto", "https")]))
    assert env["wsgi.url_scheme"] == "https"


def test_conflicting_scheme_headers_are_400(server, state_dir):
    srv = server("echo:app", env={"STATE_DIR": str(state_dir)})
    r, closed = one(srv, request_bytes("GET", "/", headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")]))
    assert r.status == 400 and closed
    assert calls(state_dir) == []


def test_conflicting_scheme_headers_ignored_when_untrusted(server):
    srv = server("echo:app", "--forwarded-allow-ips", "10.9.9.9")
    env = env_of(srv, request_bytes("GET", "/", headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")]))
    assert env["wsgi.url_scheme"] == "http"


def test_remote_addr_ignores_x_forwarded_for(trusted):
    with Conn(trusted.port) as c:
        c.send(request_bytes("GET", "/", headers=[("X-Forwarded-For", "203.0.113.9")]))
        env = c.read_response().json()
        local_port = c.sock.getsockname()[1]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"


# --- PROXY protocol v1 ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pp_v1(module_server):
    return module_server("echo:app", "--proxy-protocol", "v1")


def test_proxy_v1_tcp4(pp_v1):
    env = env_of(pp_v1, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n" + request_bytes("GET", "/pp"))
    assert env["REMOTE_ADDR"] == "1.2.3.4"
    assert env["REMOTE_PORT"] == "1111"
    assert env["PROXY_PROTOCOL"] == "TCP4"
    assert env["PROXY_ADDR"] == "5.6.7.8"
    assert env["PROXY_PORT"] == "80"
    assert env["PATH_INFO"] == "/pp"


def test_proxy_v1_tcp6(pp_v1):
    env = env_of(pp_v1, b"PROXY TCP6 2001:db8::1 2001:db8::2 4444 443\r\n" + request_bytes("GET", "/pp6"))
    assert env["REMOTE_ADDR"] == "2001:db8::1"
    assert env["REMOTE_PORT"] == "4444"
    assert env["PROXY_PROTOCOL"] == "TCP6"
    assert env["PROXY_ADDR"] == "2001:db8::2" and env["PROXY_PORT"] == "443"


def test_proxy_info_persists_across_keepalive(pp_v1):
    with Conn(pp_v1.port) as c:
        c.send(b"PROXY TCP4 9.8.7.6 5.6.7.8 2222 80\r\n" + request_bytes("GET", "/first"))
        e1 = c.read_response().json()
        c.send(request_bytes("GET", "/second"))
        e2 = c.read_response().json()
    assert e1["REMOTE_ADDR"] == e2["REMOTE_ADDR"] == "9.8.7.6"
    assert e2["REMOTE_PORT"] == "2222" and e2["PATH_INFO"] == "/second"


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1111 80\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1111 80\r\n",
    ],
    ids=["bad-port", "bad-addr", "missing-field", "bad-proto"],
)
def test_invalid_proxy_v1_line_is_400(server, state_dir, line):
    srv = server("echo:app", "--proxy-protocol", "v1", env={"STATE_DIR": str(state_dir)})
    r, closed = one(srv, line + request_bytes("GET", "/"))
    assert r.status == 400 and closed
    assert calls(state_dir) == []


def test_proxy_from_disallowed_peer_is_403(server, state_dir):
    srv = server(
        "echo:app", "--proxy-protocol", "v1", "--proxy-allow-from", "10.9.9.9", env={"STATE_DIR": str(state_dir)}
    )
    r, closed = one(srv, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n" + request_bytes("GET", "/"))
    assert r.status == 403 and closed
    assert calls(state_dir) == []


# --- PROXY protocol v2 ----------------------------------------------------------------------------
def pp2_inet(src, dst, sport, dport, command=0x1):
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    return PP2_SIG + bytes([0x20 | command, 0x11]) + struct.pack(">H", len(addrs)) + addrs


def pp2_inet6(src, dst, sport, dport):
    addrs = (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack(">HH", sport, dport)
    )
    return PP2_SIG + bytes([0x21, 0x21]) + struct.pack(">H", len(addrs)) + addrs


@pytest.mark.parametrize("mode", ["v2", "auto"])
def test_proxy_v2_inet(server, mode):
    srv = server("echo:app", "--proxy-protocol", mode)
    env = env_of(srv, pp2_inet("1.2.3.4", "5.6.7.8", 1111, 80) + request_bytes("GET", "/v2"))
    assert env["REMOTE_ADDR"] == "1.2.3.4" and env["REMOTE_PORT"] == "1111"
    assert env["PROXY_ADDR"] == "5.6.7.8" and env["PROXY_PORT"] == "80"
    assert env["PROXY_PROTOCOL"] == "TCP4"
    assert env["PATH_INFO"] == "/v2"


def test_proxy_v2_inet6(server):
    srv = server("echo:app", "--proxy-protocol", "v2")
    env = env_of(srv, pp2_inet6("2001:db8::7", "2001:db8::8", 5555, 8443) + request_bytes("GET", "/v2six"))
    assert env["REMOTE_ADDR"] == "2001:db8::7" and env["REMOTE_PORT"] == "5555"
    assert env["PROXY_PROTOCOL"] == "TCP6"


def test_proxy_v2_local_keeps_tcp_peer(server):
    srv = server("echo:app", "--proxy-protocol", "v2")
    local = PP2_SIG + bytes([0x20, 0x00]) + struct.pack(">H", 0)
    env = env_of(srv, local + request_bytes("GET", "/local"))
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["PATH_INFO"] == "/local"


def test_proxy_auto_accepts_v1_and_plain(server):
    srv = server("echo:app", "--proxy-protocol", "auto")
    env = env_of(srv, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n" + request_bytes("GET", "/auto"))
    assert env["REMOTE_ADDR"] == "1.2.3.4"
    env = env_of(srv, request_bytes("GET", "/plain-request-without-proxy-header"))
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_proxy_v2_from_disallowed_peer_is_403(server, state_dir):
    srv = server(
        "echo:app", "--proxy-protocol", "v2", "--proxy-allow-from", "10.9.9.9", env={"STATE_DIR": str(state_dir)}
    )
    r, closed = one(srv, pp2_inet("1.2.3.4", "5.6.7.8", 1111, 80) + request_bytes("GET", "/"))
    assert r.status == 403 and closed
    assert calls(state_dir) == []


def test_proxy_line_ignored_when_off(server, state_dir):
    srv = server("echo:app", env={"STATE_DIR": str(state_dir)})
    r, _ = one(srv, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n" + request_bytes("GET", "/"))
    assert r.status == 400  # "PROXY" is not a valid request line when the protocol is off
    assert calls(state_dir) == []
