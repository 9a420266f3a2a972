"""Raw-socket helpers for wire-level tests: send bytes, read until close, parse HTTP/1.x responses.

Everything here is bounded in time; all sockets are loopback.
"""

from __future__ import annotations

import random
import select
import socket
import time
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 5.0


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    framing: str = "none"  # "length", "chunked", "close", "none"
    trailers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = True

    def header(self, name: str, default=None):
        values = self.header_all(name)
        return values[0] if values else default

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for (k, v) in self.headers if k.lower() == lname]

    def has_header(self, name: str) -> bool:
        return bool(self.header_all(name))

    def json(self):
        import json

        return json.loads(self.body)


class Incomplete(Exception):
    """The buffer does not (yet) hold a complete response."""


def _parse_head(buf: bytes):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        raise Incomplete()
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line: {status_line!r}")
    version = parts[0]
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line: {line!r}")
        headers.append((name, value.strip(" \t")))
    return version, status, reason, headers, end + 4


def _parse_chunked(buf: bytes, pos: int):
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            raise Incomplete()
        size_text = buf[pos:eol].split(b";", 1)[0].strip()
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            trailers = []
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    raise Incomplete()
                line = buf[pos:eol]
                pos = eol + 2
                if not line:
                    return bytes(body), trailers, pos
                name, _, value = line.decode("latin-1").partition(":")
                trailers.append((name, value.strip()))
        if len(buf) < pos + size + 2:
            raise Incomplete()
        body += buf[pos : pos + size]
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise ValueError("chunk not terminated by CRLF")
        pos += size + 2


def parse_one(buf: bytes, *, head: bool = False, eof: bool = False):
    """Parse one response from the start of ``buf``.

    Returns (Response, consumed). Raises Incomplete when more bytes are needed
    (if ``eof`` is True, a close-delimited body takes the rest of the buffer).
    """
    version, status, reason, headers, pos = _parse_head(buf)
    resp = Response(version, status, reason, headers)
    lower = {k.lower(): v for k, v in headers}
    if head or 100 <= status < 200 or status in (204, 304):
        resp.framing = "none"
        return resp, pos
    te = lower.get("transfer-encoding")
    if te is not None and "chunked" in te.lower():
        body, trailers, end = _parse_chunked(buf, pos)
        resp.body, resp.trailers, resp.framing = body, trailers, "chunked"
        return resp, end
    if "content-length" in lower:
        n = int(lower["content-length"])
        if len(buf) < pos + n:
            if eof:
                resp.body = buf[pos:]
                resp.framing = "length"
                resp.complete = False
                return resp, len(buf)
            raise Incomplete()
        resp.body = buf[pos : pos + n]
        resp.framing = "length"
        return resp, pos + n
    # close-delimited
    if not eof:
        raise Incomplete()
    resp.body = buf[pos:]
    resp.framing = "close"
    return resp, len(buf)


def parse_responses(data: bytes, methods=None, *, skip_interim: bool = True):
    """Parse every response in ``data`` (a complete capture up to connection close).

    ``methods`` optionally lists the request methods in order so HEAD responses are
    parsed without a body. Interim 1xx responses are dropped when ``skip_interim``.
    Returns (responses, leftover_bytes).
    """
    out = []
    buf = data
    i = 0
    while buf:
        method = methods[i] if methods and i < len(methods) else "GET"
        try:
            resp, used = parse_one(buf, head=(method == "HEAD"), eof=True)
        except Incomplete:
            break
        buf = buf[used:]
        if 100 <= resp.status < 200 and resp.status != 101:
            if not skip_interim:
                out.append(resp)
            continue
        out.append(resp)
        i += 1
    return out, buf


def split_random(data: bytes, rng: random.Random, max_chunk: int | None = None):
    """Split ``data`` into random-sized pieces (at least 1 byte each)."""
    if max_chunk is None:
        max_chunk = max(1, len(data) // 8)
    pieces = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, max_chunk)
        pieces.append(data[pos : pos + n])
        pos += n
    return pieces


def connect(port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_until_close(sock: socket.socket, timeout: float = DEFAULT_TIMEOUT):
    """Read until the peer closes or ``timeout`` elapses. Returns (data, closed)."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), False
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return b"".join(chunks), False
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), True
        if not data:
            return b"".join(chunks), True
        chunks.append(data)


def send_pieces(sock: socket.socket, pieces, pause: float = 0.0, received: list | None = None):
    """Send pieces in order, collecting any bytes the server sends meanwhile into ``received``.

    Stops early (returns False) when the server has closed its side or reset the connection,
    so an early error response is not lost to a reset caused by further writes.
    """
    for p in pieces:
        while True:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                break
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return False
            if not data:
                return False
            if received is not None:
                received.append(data)
        try:
            sock.sendall(p)
        except (BrokenPipeError, ConnectionResetError):
            return False
        if pause:
            time.sleep(pause)
    return True


def exchange(
    port: int,
    data: bytes,
    *,
    rng: random.Random | None = None,
    max_chunk: int | None = None,
    pause: float = 0.0,
    shutdown: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    host: str = "127.0.0.1",
):
    """Send ``data`` (whole, or split by ``rng``), half-close, read until close.

    Returns (received_bytes, closed_by_server).
    """
    with connect(port, host, timeout) as s:
        pieces = split_random(data, rng, max_chunk) if rng is not None else [data]
        early: list[bytes] = []
        still_open = send_pieces(s, pieces, pause, early)
        if shutdown and still_open:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        rest, closed = recv_until_close(s, timeout)
        return b"".join(early) + rest, closed


class Conn:
    """An interactive client connection that parses responses incrementally."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT):
        self.sock = connect(port, host, timeout)
        self.buf = b""
        self.eof = False
        self.timeout = timeout

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for response bytes")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for response bytes") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_response(self, *, head: bool = False, timeout: float | None = None, interim: bool = False) -> Response:
        """Read one response; 1xx interim responses are skipped unless ``interim``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                resp, used = parse_one(self.buf, head=head, eof=self.eof)
            except Incomplete:
                if self.eof:
                    raise ConnectionError(f"connection closed; partial data {self.buf[:200]!r}") from None
                self._fill(deadline)
                continue
            self.buf = self.buf[used:]
            if 100 <= resp.status < 200 and resp.status != 101 and not interim:
                continue
            return resp

    def read_some(self, timeout: float = 1.0) -> bytes:
        """Return whatever arrives within ``timeout`` (possibly b"")."""
        deadline = time.monotonic() + timeout
        try:
            self._fill(deadline)
        except TimeoutError:
            pass
        data, self.buf = self.buf, b""
        return data

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while marker not in self.buf:
            if self.eof or not self._fill(deadline):
                raise ConnectionError(f"closed before {marker!r}; got {self.buf[:300]!r}")
        return self.buf

    def is_closed(self, timeout: float = 2.0) -> bool:
        """True if the server closes the connection within ``timeout`` (ignoring pending bytes)."""
        if self.eof:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self._fill(deadline):
                    return True
            except TimeoutError:
                return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request_bytes(method="GET", target="/", version="HTTP/1.1", headers=None, body=b"", host=True) -> bytes:
    lines = [f"{method} {target} {version}"]
    hdrs = list(headers or [])
    if host and version == "HTTP/1.1" and not any(k.lower() == "host" for k, _ in hdrs):
        hdrs.insert(0, ("Host", "localhost"))
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    for k, v in hdrs:
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
