"""Large WSGI request bodies: kept in memory up to --body-buffer-size, spooled to an unnamed
temporary file beyond it, so an upload costs the worker disk, not memory; the app reads it from
wsgi.input either way."""

import hashlib
import os

import pytest

from procs import children, wait_until
from wire import Conn, request_bytes

MIB = 1024 * 1024
BLOCK = bytes(range(256)) * 4096  # 1 MiB


def peak_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def upload(port, size, *, chunked=False, expect_continue=False, timeout=120):
    """POST ``size`` bytes of BLOCK to /digest; returns (response, sha256 of what was sent)."""
    headers = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(size))]
    if expect_continue:
        headers.append(("Expect", "100-continue"))
    sent = hashlib.sha256()
    with Conn(port, timeout=timeout) as c:
        c.send(request_bytes("POST", "/digest", headers=headers))
        if expect_continue:
            interim = c.read_response(interim=True, timeout=10)
            assert interim.status == 100
        left = size
        while left:
            piece = BLOCK[: min(left, len(BLOCK))]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent.update(piece)
            left -= len(piece)
        if chunked:
            c.send(b"0\r\n\r\n")
        return c.read_response(timeout=timeout), sent.hexdigest()


@pytest.fixture
def spool_dir(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    return d


@pytest.mark.parametrize("cls", ["sync", "gthread", "gevent"])
def test_a_large_upload_is_spooled_not_held_in_memory(server, spool_dir, cls):
    # 64 MiB with the default 1 MiB buffer: the app reads every byte back, the body was a file in
    # TMPDIR while the app ran, the worker's peak memory grew far less than the body, and
    # nothing is left in TMPDIR afterwards.
    srv = server("features:app", "-w", "1", "-k", cls, env={"TMPDIR": str(spool_dir)})
    worker = wait_until(lambda: children(srv.proc.pid), msg="a worker")[0]
    small, _ = upload(srv.port, 1000)
    assert small.status == 200 and small.json()["spool_files"] == 0, "a small body stays in memory"
    before = peak_kib(worker)
    size = 64 * MIB
    resp, digest = upload(srv.port, size)
    assert resp.status == 200, resp.body[:300]
    got = resp.json()
    assert (got["len"], got["sha256"]) == (size, digest)
    assert got["spool_files"] == 1, "the body should have been read from one spool file"
    grown = peak_kib(worker) - before
    assert grown < 24 * 1024, f"worker peak memory grew by {grown} KiB for a 64 MiB upload"
    assert os.listdir(spool_dir) == [], "spool files must not outlive their request"


def test_chunked_and_100_continue_bodies_are_spooled_too(server, spool_dir):
    srv = server("features:app", "-w", "1", "--body-buffer-size", "65536", env={"TMPDIR": str(spool_dir)})
    for chunked, expect_continue in [(True, False), (False, True), (True, True)]:
        size = 3 * MIB + 17
        resp, digest = upload(srv.port, size, chunked=chunked, expect_continue=expect_continue)
        assert resp.status == 200, (chunked, expect_continue, resp.body[:300])
        got = resp.json()
        assert (got["len"], got["sha256"], got["spool_files"]) == (size, digest, 1), (chunked, expect_continue)
    # at the buffer size exactly, the body stays in memory
    resp, digest = upload(srv.port, 65536)
    assert resp.json() == {"len": 65536, "sha256": digest, "spool_files": 0}


def test_an_unwritable_spool_dir_is_a_500_naming_the_fix(server, tmp_path):
    # TMPDIR points nowhere: the big request is answered 500 and the log says what to change;
    # the worker lives on and answers the next (small) request.
    srv = server("features:app", "-w", "1", "--body-buffer-size", "1024", env={"TMPDIR": str(tmp_path / "missing")})
    worker = wait_until(lambda: children(srv.proc.pid), msg="a worker")[0]
    with Conn(srv.port, timeout=10) as c:
        c.send(request_bytes("POST", "/digest", body=b"x" * 5000))
        resp = c.read_response()
    assert resp.status == 500
    log = wait_until(lambda: "could not spool" in srv.stderr_text() and srv.stderr_text(), msg="the log line")
    assert "TMPDIR" in log and "--body-buffer-size" in log and str(tmp_path / "missing") in log
    small, _ = upload(srv.port, 100)
    assert small.status == 200 and small.json()["len"] == 100
    assert children(srv.proc.pid) == [worker], "the worker must survive"
