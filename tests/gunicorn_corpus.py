"""Gunicorn's request corpus (`tests/requests/{valid,invalid}/*.http` of its sdist), fetched
with pip at test or fuzz time into tests/.corpus (never committed), and its `.http` escape
rules. Used by tests/test_corpus.py (replayed against the server) and fuzz/run.py (seeds for
the request-head fuzzer)."""

import subprocess
import sys
import tarfile
from pathlib import Path

GUNICORN_VERSION = "27.0.1"
CORPUS_DIR = Path(__file__).resolve().parent / ".corpus"


def corpus_root() -> Path:
    """Return tests/.corpus/gunicorn-V/tests/requests, downloading the sdist if needed."""
    root = CORPUS_DIR / f"gunicorn-{GUNICORN_VERSION}" / "tests" / "requests"
    if (root / "valid").is_dir() and (root / "invalid").is_dir():
        return root
    CORPUS_DIR.mkdir(exist_ok=True)
    tarball = CORPUS_DIR / f"gunicorn-{GUNICORN_VERSION}.tar.gz"
    if not tarball.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"gunicorn=={GUNICORN_VERSION}",
                "-d",
                str(CORPUS_DIR),
            ],
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
    prefix = f"gunicorn-{GUNICORN_VERSION}/tests/requests/"
    with tarfile.open(tarball) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
        tf.extractall(CORPUS_DIR, members=members, filter="data")
    return root


def decode_http(raw: bytes) -> bytes:
    """gunicorn treq.py rules: drop literal newlines, then unescape \\r\\n, \\0, \\n, \\t, \\xHH."""
    data = raw.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\x00").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i : i + 2] == b"\\x" and i + 3 < len(data):
            try:
                out.append(int(data[i + 2 : i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(data[i])
        i += 1
    if b"\\" in out:
        raise ValueError("unexpected backslash escape in corpus file")
    return bytes(out)
