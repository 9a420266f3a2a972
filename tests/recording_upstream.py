"""A recording HTTP/1.1 upstream for the balancer's wire-level tests: a thread-per-connection
loopback server that reads what a proxy sends with a *strict* parser, keeps every byte and
every request it parsed, and answers with a scripted response chosen by the request's path.

Strict means what a careful origin server would insist on before trusting the framing: CRLF
line endings, a well-formed request line, no whitespace before a colon, exactly one of
``Content-Length`` (plain digits) or ``Transfer-Encoding`` ending in ``chunked``, a valid
chunked body with an empty or well-formed trailer section, and no hop-by-hop header
(``Connection``, ``Keep-Alive``, ``TE``, ``Trailer``, ``Upgrade``, ``Proxy-Connection``) — a
proxy strips those. Anything else is recorded as a violation and the connection closed.

Scripted answers (by path; anything else is ``200 ok`` with ``Content-Length``):

* ``/resp/cl-te``       a response with both Content-Length and chunked framing;
* ``/resp/two-cl``      two different Content-Length values;
* ``/resp/bad-chunk``   a chunked body whose second chunk size is not hex;
* ``/resp/bad-chunk-late`` the same, the bad size sent 0.2 s after the first chunk;
* ``/resp/surplus``     ``200 ok`` followed at once by a second response nobody asked for;
* ``/resp/late``        ``200 ok``, then 0.2 s later a second response on the idle connection.

Bounded: every socket has a timeout; ``close()`` stops the listener and joins its thread.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field

TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
HOP_BY_HOP = {b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"proxy-connection"}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNASKED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"

SCRIPTED = {
    "/resp/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "/resp/two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "/resp/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
    "/resp/surplus": OK + UNASKED,
}


class Violation(Exception):
    """What the proxy sent could be read more than one way."""


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked" or "none"

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class RecordingUpstream:
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # every byte received since reset(), as read
    connections: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.violations.clear()
            self.raw.clear()

    def bytes_received(self) -> int:
        with self._lock:
            return sum(len(r) for r in self.raw)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        reader = _Reader(conn, self._keep)
        with conn:
            conn.settimeout(10)
            while not self._stop.is_set():
                try:
                    received = read_request(reader)
                except EOFError:
                    return
                except (Violation, ValueError) as exc:
                    with self._lock:
                        self.violations.append(str(exc))
                    return
                except OSError:
                    return
                with self._lock:
                    self.requests.append(received)
                path = received.target.split("?", 1)[0]
                try:
                    if path != "/resp/bad-chunk-late":
                        conn.sendall(SCRIPTED.get(path, OK))
                    if path == "/resp/bad-chunk-late":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
                        time.sleep(0.2)
                        conn.sendall(b"zz\r\n")
                    if path == "/resp/late":
                        time.sleep(0.2)
                        conn.sendall(UNASKED)
                except OSError:
                    return

    def _keep(self, data: bytes):
        with self._lock:
            self.raw.append(data)


class _Reader:
    """Buffered reads from a socket, reporting every byte received to ``on_data``."""

    def __init__(self, sock: socket.socket, on_data):
        self.sock, self.on_data, self.buf = sock, on_data, b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.on_data(data)
        self.buf += data

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > 65536:
                raise Violation("a line longer than 64 KiB")
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        if not line.endswith(b"\r"):
            raise Violation(f"a line ending in a bare LF: {line!r}")
        if b"\r" in line[:-1]:
            raise Violation(f"a bare CR: {line!r}")
        return line[:-1]

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def read_request(reader: _Reader) -> Received:
    """One request, read strictly; raises Violation for anything ambiguous, EOFError at a clean
    end between requests."""
    request_line = reader.line()
    parts = request_line.split(b" ")
    if len(parts) != 3 or not TOKEN.match(parts[0]) or parts[2] != b"HTTP/1.1" or not parts[1]:
        raise Violation(f"request line {request_line!r}")
    if any(c < 0x21 or c == 0x7F for c in parts[1]):
        raise Violation(f"control character in the target {parts[1]!r}")
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.line()
        if not line:
            break
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN.match(name):
            raise Violation(f"header line {line!r}")
        value = value.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise Violation(f"control character in {name!r}")
        if name.lower() in HOP_BY_HOP:
            raise Violation(f"hop-by-hop header {name!r} forwarded")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    codings = [v for k, v in headers if k.lower() == "transfer-encoding"]
    hosts = [v for k, v in headers if k.lower() == "host"]
    if len(hosts) != 1:
        raise Violation(f"{len(hosts)} Host headers")
    if lengths and codings:
        raise Violation("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(codings) > 1:
        raise Violation("a framing header repeated")
    method, target = parts[0].decode(), parts[1].decode("latin-1")
    if codings:
        elements = [c.strip().lower() for c in codings[0].split(",")]
        if elements[-1] != "chunked" or elements.count("chunked") != 1:
            raise Violation(f"Transfer-Encoding {codings[0]!r}")
        return Received(method, target, headers, read_chunked(reader), "chunked")
    if lengths:
        if not re.fullmatch(r"[0-9]+", lengths[0]) or (len(lengths[0]) > 1 and lengths[0][0] == "0"):
            raise Violation(f"Content-Length {lengths[0]!r}")
        return Received(method, target, headers, reader.exactly(int(lengths[0])), "length")
    return Received(method, target, headers, b"", "none")


def read_chunked(reader: _Reader) -> bytes:
    body = b""
    while True:
        size_line = reader.line()
        size, _, extension = size_line.partition(b";")
        if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size):
            raise Violation(f"chunk size {size_line!r}")
        n = int(size, 16)
        if n == 0:
            break
        body += reader.exactly(n)
        if reader.exactly(2) != b"\r\n":
            raise Violation("chunk data longer than its size")
    while reader.line():  # trailer section
        pass
    return body
